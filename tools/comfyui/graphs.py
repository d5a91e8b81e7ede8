"""ComfyUI's API-format prompt: unique node ids per run, widget defaults, ids mapped back in results.

A graph is `{node_id: {"class_type": ..., "inputs": {...}}}` where a link is
`[source_node_id, output_index]`.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Iterable, Mapping

Graph = dict[str, dict[str, Any]]

_fresh_counter = itertools.count(1)


def fresh_graph(graph: Graph, tag: str | None = None) -> tuple[Graph, dict[str, str]]:
    """A copy of `graph` whose node ids are unique to this call ("<tag>.<id>"), links rewritten.

    ComfyUI caches node outputs between prompts by node id and inputs, so a graph that reuses the
    ids and inputs of an earlier one silently reuses its results (and an unchanged output node is
    not run again). Fresh ids make every run execute every node. Returns (graph, queued id -> id)."""
    tag = tag or f"r{next(_fresh_counter)}"
    new_id = {str(k): f"{tag}.{k}" for k in graph}
    out: Graph = {}
    for k, node in graph.items():
        node = copy.deepcopy(node)
        inputs = node.get("inputs", {})
        for name, value in inputs.items():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in new_id and isinstance(value[1], int):
                inputs[name] = [new_id[str(value[0])], value[1]]
        out[new_id[str(k)]] = node
    return out, {v: k for k, v in new_id.items()}


def with_lora(graph: Graph, lora_name: str, strength: float = 1.0) -> Graph:
    """A copy of `graph` with core LoraLoaderModelOnly after every Lumina Model Loader: each node
    that took the loader's MODEL takes the LoRA-patched one instead."""
    out = copy.deepcopy(graph)
    loaders = [k for k, node in graph.items() if node["class_type"] == "LuminaModelLoader"]
    if not loaders:
        raise ValueError("the workflow has no Lumina Model Loader to put a LoRA after")
    for n, loader in enumerate(loaders):
        lora_id = f"lora{n}"
        for node in out.values():
            for name, value in node["inputs"].items():
                if value == [loader, 0]:
                    node["inputs"][name] = [lora_id, 0]
        out[lora_id] = {"class_type": "LoraLoaderModelOnly",
                        "inputs": {"model": [loader, 0], "lora_name": lora_name, "strength_model": float(strength)}}
    return out


def node_defaults(info: Mapping[str, Any], optional: bool = False) -> dict[str, Any]:
    """Widget values a fresh node would get in the UI, from its object_info: each input's
    "default", or the first choice of a combo. Link-type inputs (MODEL, LATENT, ...) are left out.

        inputs = {**node_defaults(server.object_info("KSampler")), "model": ["1", 0], "steps": 2}
    """
    out: dict[str, Any] = {}
    sections = ("required", "optional") if optional else ("required",)
    for section in sections:
        for name, spec in (info.get("input", {}).get(section) or {}).items():
            kind = spec[0] if spec else None
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
            if "default" in options:
                out[name] = options["default"]
            elif isinstance(kind, list) and kind:
                out[name] = kind[0]
            elif kind == "BOOLEAN":
                out[name] = False
    return out


def rekey(mapping: Mapping[str, Any] | None, back: Mapping[str, str]) -> dict[str, Any]:
    """A dict keyed by queued node ids, keyed by the caller's ids instead."""
    return {back.get(k, k): v for k, v in (mapping or {}).items()}


def rekey_messages(messages: Iterable[Any] | None, back: Mapping[str, str]) -> list[Any]:
    """Status messages / events ([event, data] pairs) with node ids mapped back to the caller's."""
    out = []
    for message in messages or []:
        event, data = message[0], message[1]
        if isinstance(data, dict) and back:
            data = dict(data)
            for key in ("node", "node_id"):
                if data.get(key) in back:
                    data[key] = back[data[key]]
            for key in ("nodes", "executed"):
                if isinstance(data.get(key), list):
                    data[key] = [back.get(n, n) for n in data[key]]
        out.append([event, data])
    return out


def execution_error(entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """The `execution_error` message of a history entry (node_id, node_type, exception_type,
    exception_message, traceback, ...), or None."""
    for message in (entry.get("status") or {}).get("messages") or []:
        if message[0] == "execution_error":
            return message[1]
    return None
