"""Models: the architecture registry and build_model (smp, torchvision), offline pretrained
encoder weights, and the state-dict surgery that loads them into one-channel encoders."""
