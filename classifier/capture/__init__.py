"""Captures in: reading pcap/pcapng files (reader), decoding headers into the columnar packet table (decode, packets, protocols), and writing captures (writer)."""
