"""Models: the architecture registry (logical matrices per model_type), loading, and fused-projection surgery."""
