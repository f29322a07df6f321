"""bertforge: pretraining and finetuning engine for BERT-style bidirectional encoders."""

__version__ = "0.1.0"
