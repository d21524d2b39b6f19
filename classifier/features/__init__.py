"""Packets to features: per-device streams (devices), segment and CCIT features (segments), sessions (sessions), and the one offline path through them (pipeline)."""
