"""IoT device classification from traffic: captures -> packet columns -> features -> models."""

__version__ = "0.1.0"
