"""What the client and the service both use and that depends on neither: ``nothing.common``."""
