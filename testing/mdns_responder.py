"""A device that answers mDNS / DNS-SD queries and says nothing unasked: python-zeroconf (an
independent, widely used implementation) publishing one HomeKit accessory, for the identity
probe's end-to-end test. Run inside a lab host:

    python -m testing.mdns_responder IPV4 INSTANCE CI

It registers ``INSTANCE._hap._tcp.local.`` (TXT ``ci=CI``) at IPV4, prints one line
``registered`` once its own announcements are over, then only answers queries until killed.
"""

from __future__ import annotations

import argparse
import socket
import time


def main(argv=None) -> int:
    from zeroconf import IPVersion, ServiceInfo, Zeroconf

    ap = argparse.ArgumentParser()
    ap.add_argument("ip")
    ap.add_argument("instance")
    ap.add_argument("ci")
    args = ap.parse_args(argv)
    zc = Zeroconf(interfaces=[args.ip], ip_version=IPVersion.V4Only)
    host = args.instance.lower().replace(" ", "-") + ".local."
    info = ServiceInfo("_hap._tcp.local.", f"{args.instance}._hap._tcp.local.",
                       addresses=[socket.inet_aton(args.ip)], port=8080,
                       properties={"ci": args.ci, "sf": "1", "c#": "1"}, server=host)
    zc.register_service(info)          # probes and announces (returns when the announcements are sent)
    print("registered", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        zc.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
