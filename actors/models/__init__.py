"""Model architectures a backend builds before it loads weights into them: a state dict (the
reference's resnet50-19c8e357.pth) holds tensors, not the network that uses them."""
