"""Why a target set wins: the learned updates (LoRA paper §7), mechanism probes
(attention vs content shift, attention patching) and the weighted-merge curve."""
