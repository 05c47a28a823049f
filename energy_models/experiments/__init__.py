"""End-to-end experiments behind the command-line trainers in train/."""
