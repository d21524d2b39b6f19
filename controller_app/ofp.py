"""Flow intents -> OpenFlow 1.3 messages, with the framework's own parser/serializer.

Only ``datapath.ofproto`` and ``datapath.ofproto_parser`` are used, so the same code serves
os-ken and Ryu (their OpenFlow 1.3 modules share names and semantics).
"""

from __future__ import annotations

from classifier.capture.packets import mac_to_str

from controller_app.intents import (OFPM_ALL, OFPTT_ALL, FlowAdd, FlowDelete, Match, MeterAdd, MeterDelete, Output, PacketOut,
                      SetDscp, SetQueue)


def ofp_match(parser, m: Match):
    kw = {}
    if m.in_port is not None:
        kw["in_port"] = m.in_port
    if m.eth_dst is not None:
        kw["eth_dst"] = mac_to_str(m.eth_dst)
    if m.eth_src is not None:
        kw["eth_src"] = mac_to_str(m.eth_src)
    if m.eth_type is not None:
        kw["eth_type"] = m.eth_type
    for name, net in (("src", m.ip_src), ("dst", m.ip_dst)):
        if net is not None:
            field = f"ipv{net.version}_{name}"
            kw[field] = (str(net.network_address), str(net.netmask))
    if m.metadata is not None:
        kw["metadata"] = tuple(m.metadata)
    for name in ("ip_proto", "udp_src", "udp_dst", "tcp_src", "tcp_dst"):
        if getattr(m, name) is not None:
            kw[name] = getattr(m, name)
    return parser.OFPMatch(**kw)


def ofp_actions(parser, actions) -> list:
    out = []
    for a in actions:
        if isinstance(a, Output):
            out.append(parser.OFPActionOutput(a.port, a.max_len))
        elif isinstance(a, SetQueue):
            out.append(parser.OFPActionSetQueue(a.queue_id))
        elif isinstance(a, SetDscp):
            out.append(parser.OFPActionSetField(ip_dscp=a.dscp))
        else:
            raise TypeError(f"not an action: {a!r}")
    return out


def to_message(dp, intent):
    """One OpenFlow message for one switch intent."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    if isinstance(intent, FlowAdd):
        inst = []
        if intent.meter is not None:
            inst.append(parser.OFPInstructionMeter(intent.meter, ofp.OFPIT_METER))
        if intent.actions:
            inst.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, ofp_actions(parser, intent.actions)))
        if intent.write_metadata is not None:
            inst.append(parser.OFPInstructionWriteMetadata(*intent.write_metadata))
        if intent.goto is not None:
            inst.append(parser.OFPInstructionGotoTable(intent.goto))
        return parser.OFPFlowMod(
            dp, cookie=intent.cookie, cookie_mask=0, table_id=intent.table, command=ofp.OFPFC_ADD,
            idle_timeout=intent.idle_timeout, hard_timeout=intent.hard_timeout, priority=intent.priority,
            buffer_id=ofp.OFP_NO_BUFFER, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
            flags=ofp.OFPFF_SEND_FLOW_REM if intent.notify_removed else 0,
            match=ofp_match(parser, intent.match), instructions=inst)
    if isinstance(intent, FlowDelete):
        strict = intent.priority is not None
        return parser.OFPFlowMod(
            dp, cookie=intent.cookie, cookie_mask=intent.cookie_mask,
            table_id=ofp.OFPTT_ALL if intent.table == OFPTT_ALL else intent.table,
            command=ofp.OFPFC_DELETE_STRICT if strict else ofp.OFPFC_DELETE,
            priority=intent.priority if strict else 0, buffer_id=ofp.OFP_NO_BUFFER,
            out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=ofp_match(parser, intent.match))
    if isinstance(intent, MeterAdd):
        unit = ofp.OFPMF_KBPS if intent.unit == "kbps" else ofp.OFPMF_PKTPS
        return parser.OFPMeterMod(
            dp, command=ofp.OFPMC_MODIFY if intent.modify else ofp.OFPMC_ADD, flags=unit | ofp.OFPMF_BURST,
            meter_id=intent.meter_id, bands=[parser.OFPMeterBandDrop(rate=intent.rate, burst_size=intent.burst)])
    if isinstance(intent, MeterDelete):
        return parser.OFPMeterMod(dp, command=ofp.OFPMC_DELETE, flags=0,
                                  meter_id=ofp.OFPM_ALL if intent.meter_id == OFPM_ALL else intent.meter_id)
    if isinstance(intent, PacketOut):
        return parser.OFPPacketOut(dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=intent.in_port,
                                   actions=[parser.OFPActionOutput(intent.port)], data=intent.data)
    raise TypeError(f"not a switch intent: {intent!r}")


def describe(intent) -> dict:
    """A JSON-able description of a switch intent, for the structured rule-change log."""
    if isinstance(intent, FlowAdd):
        return {"op": "flow_add", "dpid": f"{intent.dpid:016x}", "table": int(intent.table), "priority": intent.priority,
                "match": _match_dict(intent.match), "cookie": f"0x{intent.cookie:016x}",
                "actions": [_action_str(a) for a in intent.actions], "goto": intent.goto, "meter": intent.meter,
                "idle_timeout": intent.idle_timeout,
                **({"write_metadata": list(intent.write_metadata)} if intent.write_metadata is not None else {})}
    if isinstance(intent, FlowDelete):
        return {"op": "flow_delete", "dpid": f"{intent.dpid:016x}", "table": int(intent.table), "priority": intent.priority,
                "match": _match_dict(intent.match), "cookie": f"0x{intent.cookie:016x}",
                "cookie_mask": f"0x{intent.cookie_mask:016x}"}
    if isinstance(intent, MeterAdd):
        return {"op": "meter_modify" if intent.modify else "meter_add", "dpid": f"{intent.dpid:016x}",
                "meter": intent.meter_id, "rate": intent.rate, "burst": intent.burst, "unit": intent.unit}
    if isinstance(intent, MeterDelete):
        return {"op": "meter_delete", "dpid": f"{intent.dpid:016x}", "meter": intent.meter_id}
    if isinstance(intent, PacketOut):
        return {"op": "packet_out", "dpid": f"{intent.dpid:016x}", "port": intent.port, "bytes": len(intent.data)}
    return {"op": type(intent).__name__}


def _match_dict(m: Match) -> dict:
    out = {}
    for k, v in m.fields().items():
        if k in ("eth_src", "eth_dst"):
            out[k] = mac_to_str(v)
        elif k == "eth_type":
            out[k] = f"0x{v:04x}"
        else:
            out[k] = str(v) if not isinstance(v, int) else v
    return out


def _action_str(a) -> str:
    if isinstance(a, Output):
        return f"output:{'CONTROLLER' if a.port == 0xFFFFFFFD else a.port}" + (
            f"/{a.max_len}" if a.port == 0xFFFFFFFD else "")
    if isinstance(a, SetQueue):
        return f"set_queue:{a.queue_id}"
    if isinstance(a, SetDscp):
        return f"set_dscp:{a.dscp}"
    return repr(a)
