"""Training: WebDataset loaders, tasks, the training loop and the trainers' command line."""
