"""The benchmark's baseline: a minimal os-ken app that only parses each packet-in's data with
os-ken's own packet library (``ryu-manager benchmarks.baseline``). Defined in its own
module because os-ken's manager loads only the app classes defined in the module it is given."""

from __future__ import annotations

import logging

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import MAIN_DISPATCHER, set_ev_cls
from os_ken.lib.packet import ethernet, packet
from os_ken.ofproto import ofproto_v1_3

LOG = logging.getLogger("benchmarks.baseline")


class PacketParseBaseline(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.parsed = 0
        self.bytes = 0

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev):
        pkt = packet.Packet(ev.msg.data)
        eth = pkt.get_protocol(ethernet.ethernet)
        self.parsed += 1
        self.bytes += ev.msg.total_len if eth is not None else 0

    def close(self):
        LOG.info("baseline parsed %d packet-ins", self.parsed)
