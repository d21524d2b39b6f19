"""IP pools: destination addresses to organisations (special ranges and offline ASN data in asndb, the persistent cache, live RDAP, and the resolver that ties them together)."""
