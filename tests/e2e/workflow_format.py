"""ComfyUI's two workflow formats: the UI graph (what users drag in) and the API prompt (what /prompt runs).

`api_to_ui` lays out an API graph as a UI workflow (with Note nodes); `ui_to_api` reads a UI
workflow back. Both need /object_info to know which inputs are widgets and in what order the UI
stores their values. The agreement test runs `ui_to_api` on every committed UI workflow and
compares it with its API twin.
"""

from __future__ import annotations

from typing import Any, Mapping

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
CONTROL_WIDGET_INPUTS = {"seed", "noise_seed"}  # the UI adds a control_after_generate value after these
FRONTEND_ONLY = {"Note", "PrimitiveNode", "Reroute"}


def _inputs(info: Mapping[str, Any]) -> list[tuple[str, Any, dict]]:
    out = []
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            out.append((name, spec[0], spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}))
    return out


def _is_widget(kind: Any) -> bool:
    return isinstance(kind, list) or kind in WIDGET_TYPES


def widget_names(info: Mapping[str, Any]) -> list[str]:
    """Names in the order of a UI node's widgets_values, with the UI's extra values marked '#…'."""
    names = []
    for name, kind, config in _inputs(info):
        if not _is_widget(kind):
            continue
        names.append(name)
        if name in CONTROL_WIDGET_INPUTS and kind == "INT":
            names.append("#control_after_generate")
        if config.get("image_upload"):
            names.append("#upload")
    return names


def api_to_ui(api: Mapping[str, Any], object_info: Mapping[str, Any], notes: list[str] = (), columns: int = 4) -> dict:
    """A UI workflow laying the API graph out on a grid, plus one Note node per note."""
    nodes, links = [], []
    link_id = 0
    order = {node_id: i for i, node_id in enumerate(api)}
    outputs: dict[tuple[str, int], list[int]] = {}
    for node_id, node in api.items():
        info = object_info[node["class_type"]]
        ui_inputs, values = [], []
        for name, kind, config in _inputs(info):
            value = node["inputs"].get(name)
            if _is_widget(kind):
                if name not in node["inputs"]:
                    continue
                if isinstance(value, list):  # a widget converted to an input, fed by a link
                    link_id += 1
                    links.append([link_id, int(value[0]), value[1], int(node_id), len(ui_inputs), kind])
                    outputs.setdefault((value[0], value[1]), []).append(link_id)
                    ui_inputs.append({"name": name, "type": kind, "link": link_id, "widget": {"name": name}})
                    value = config.get("default", kind[0] if isinstance(kind, list) else None)
                values.append(value)
                if name in CONTROL_WIDGET_INPUTS and kind == "INT":
                    values.append("fixed")
                if config.get("image_upload"):
                    values.append("image")
            elif isinstance(value, list):
                link_id += 1
                links.append([link_id, int(value[0]), value[1], int(node_id), len(ui_inputs), kind])
                outputs.setdefault((value[0], value[1]), []).append(link_id)
                ui_inputs.append({"name": name, "type": kind, "link": link_id})
        i = order[node_id]
        nodes.append({
            "id": int(node_id), "type": node["class_type"], "pos": [40 + 380 * (i % columns), 40 + 330 * (i // columns)],
            "size": {"0": 340, "1": 130}, "flags": {}, "order": i, "mode": 0, "inputs": ui_inputs,
            "outputs": [], "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": values,
        })
    for ui_node, (node_id, node) in zip(nodes, api.items()):
        info = object_info[node["class_type"]]
        names = info.get("output_name") or info["output"]
        ui_node["outputs"] = [
            {"name": name, "type": kind, "links": outputs.get((node_id, slot), []), "slot_index": slot}
            for slot, (name, kind) in enumerate(zip(names, info["output"]))
        ]
    next_id = max(int(k) for k in api) + 1
    rows = -(-len(api) // columns)
    for j, text in enumerate(notes):
        nodes.append({
            "id": next_id + j, "type": "Note", "pos": [40 + 420 * j, 40 + 330 * rows], "size": {"0": 400, "1": 220},
            "flags": {}, "order": len(api) + j, "mode": 0, "properties": {"text": ""}, "widgets_values": [text],
        })
    return {
        "last_node_id": next_id + len(notes) - 1, "last_link_id": link_id, "nodes": nodes, "links": links,
        "groups": [], "config": {}, "extra": {}, "version": 0.4,
    }


def ui_to_api(ui: Mapping[str, Any], object_info: Mapping[str, Any]) -> dict:
    """The API prompt a UI workflow queues (frontend-only nodes dropped)."""
    link_source = {link[0]: (str(link[1]), link[2]) for link in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) != 0:
            continue
        info = object_info[node["type"]]
        inputs: dict[str, Any] = {}
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                inputs[slot["name"]] = list(link_source[slot["link"]])
        values = list(node.get("widgets_values", []))
        for name, value in zip(widget_names(info), values):
            if not name.startswith("#") and name not in inputs:
                inputs[name] = value
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api
