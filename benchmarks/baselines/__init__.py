"""What Offload is measured against: the bare minimum a user would otherwise write."""
