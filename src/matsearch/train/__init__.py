"""Training: the Matryoshka adapter, the MRL loss for features, MatryoshkaLoss fine-tuning of encoders."""
