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


# Node heights as ComfyUI's frontend (1.27, LiteGraph) computes them, measured in the browser test:
# a node is NODE_PAD + SLOT × max(link inputs, outputs) + the widgets' heights tall, drawn with a
# TITLE bar above its `pos`. A saved size below that is grown on load (over the node below it).
TITLE, NODE_PAD, SLOT, WIDGET, MULTILINE, IMAGE_PREVIEW = 30, 14, 20, 24, 54, 224
NODE_WIDTH, NOTE_WIDTH, GAP_X, GAP_Y = 340, 440, 50, 40
SAVE_IMAGE_SIZE = [320, 330]  # room to show the result (the frontend draws it inside the node)


def node_height(info: Mapping[str, Any]) -> int:
    """The height (title bar excluded) the frontend gives a fresh node of this type: every widget,
    optional ones included, plus a control_after_generate value and an image upload preview."""
    links, widgets = 0, 0
    for name, kind, config in _inputs(info):
        if not _is_widget(kind):
            links += 1
            continue
        widgets += MULTILINE if kind == "STRING" and config.get("multiline") else WIDGET
        if name in CONTROL_WIDGET_INPUTS and kind == "INT":
            widgets += WIDGET
        if config.get("image_upload"):
            widgets += WIDGET + IMAGE_PREVIEW
    return NODE_PAD + SLOT * max(links, len(info["output"]), 1) + widgets


def _depths(api: Mapping[str, Any]) -> dict[str, int]:
    """Column of each node: 0 for nodes without links in, else one right of its deepest source."""
    depth: dict[str, int] = {}

    def visit(node_id: str, seen: tuple = ()) -> int:
        if node_id not in depth:
            if node_id in seen:
                raise ValueError(f"cycle through node {node_id}")
            sources = [v[0] for v in api[node_id]["inputs"].values() if isinstance(v, list) and len(v) == 2]
            depth[node_id] = 1 + max((visit(str(s), seen + (node_id,)) for s in sources), default=-1)
        return depth[node_id]

    for node_id in api:
        visit(node_id)
    return depth


def layout(api: Mapping[str, Any], object_info: Mapping[str, Any]) -> dict[str, tuple[list[int], list[int]]]:
    """pos and size of each node, left to right by dependency depth, stacked in API order within a
    column, with a GAP_Y between one node's bottom and the next one's title bar."""
    depths = _depths(api)
    sizes = {nid: (list(SAVE_IMAGE_SIZE) if node["class_type"] == "SaveImage"
                   else [NODE_WIDTH, node_height(object_info[node["class_type"]])]) for nid, node in api.items()}
    widths = {}
    for nid, d in depths.items():
        widths[d] = max(widths.get(d, 0), sizes[nid][0])
    lefts, x = {}, 40
    for d in sorted(widths):
        lefts[d], x = x, x + widths[d] + GAP_X
    tops: dict[int, int] = {}
    out = {}
    for nid in api:
        d = depths[nid]
        y = tops.get(d, 40 + TITLE)
        out[nid] = ([lefts[d], y], sizes[nid])
        tops[d] = y + sizes[nid][1] + GAP_Y + TITLE
    return out


def api_to_ui(api: Mapping[str, Any], object_info: Mapping[str, Any], notes: list[str] = ()) -> dict:
    """A UI workflow laying the API graph out (see `layout`), plus Note nodes in a row below it."""
    nodes, links = [], []
    link_id = 0
    order = {node_id: i for i, node_id in enumerate(api)}
    outputs: dict[tuple[str, int], list[int]] = {}
    placed = layout(api, object_info)
    for node_id, node in api.items():
        info = object_info[node["class_type"]]
        ui_inputs, values = [], []
        omitted = None
        for name, kind, config in _inputs(info):
            value = node["inputs"].get(name)
            if _is_widget(kind):
                if name not in node["inputs"]:
                    omitted = omitted or name  # an optional widget left at its default
                    continue
                if omitted:  # widgets_values are positional: a gap would shift every later value
                    raise ValueError(f"{node['class_type']} #{node_id}: {name} is set but the earlier {omitted} is not")
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
        pos, size = placed[node_id]
        nodes.append({
            "id": int(node_id), "type": node["class_type"], "pos": pos, "size": size, "flags": {},
            "order": order[node_id], "mode": 0, "inputs": ui_inputs, "outputs": [],
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": values,
        })
    for ui_node, (node_id, node) in zip(nodes, api.items()):
        info = object_info[node["class_type"]]
        names = info.get("output_name") or info["output"]
        ui_node["outputs"] = [
            {"name": name, "type": kind, "links": outputs.get((node_id, slot), []), "slot_index": slot}
            for slot, (name, kind) in enumerate(zip(names, info["output"]))
        ]
    next_id = max(int(k) for k in api) + 1
    bottom = max(pos[1] + size[1] for pos, size in placed.values()) + GAP_Y + TITLE
    for j, text in enumerate(notes):
        nodes.append({
            "id": next_id + j, "type": "Note", "pos": [40 + (NOTE_WIDTH + GAP_X) * j, bottom], "size": [NOTE_WIDTH, 240],
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
