"""Plans: target sets and budgets resolved to per-module ranks on a weightless (meta) model, and the PEFT config."""
