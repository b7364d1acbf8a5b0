"""Offline training of the lesion classifier. Needs requirements/train.txt (torch); the portal never imports this."""
