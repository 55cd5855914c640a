"""The shared torch trainer for language models: SFT and every preference method, LoRA or full."""
