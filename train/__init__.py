"""Training and fine-tuning of Lumina models on accelerate (depends on `lumina`, never on `nodes`).

    python -m train fit --config run.yaml [section.key=value ...]
    accelerate launch -m train fit --config run.yaml      # DDP / FSDP, same config
"""
