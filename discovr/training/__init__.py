"""Training: Accelerate pretraining, Trainer fine-tuning and the paper's evaluation protocols."""
