"""The file names the released-model workflows ask for, served by tiny stand-ins.

The browser test opens every workflow as a person does; a combo widget is valid only when the
server lists its value. Rather than rewrite the workflows (their graph must equal the API twin
as committed), the workspace lists each released name, as a link to the tiny asset
tools.comfyui.assets.substitute_tiny would put in its place. Those workflows are opened, never run.
"""

from __future__ import annotations

from pathlib import Path


def link_released_names(assets, models_dir: Path) -> list[Path]:
    """Links models/<folder>/<released name> -> tiny asset; returns the links."""
    models_dir = Path(models_dir)
    links = {
        "lumina/Lumina-Next-SFT/consolidated.00-of-01.safetensors": assets.next_dit,
        "lumina/Lumina-T2I/consolidated.00-of-01.safetensors": assets.flag_dit,
        "lumina/Lumina-Video-f24R960/consolidated.00-of-01.pth": assets.lumina_video,
        "text_encoders/gemma-2b": assets.gemma,
        "text_encoders/gemma-2-2b": assets.gemma2,
        "text_encoders/Llama-2-7b-hf": assets.llama,
        "vae/sdxl_vae.safetensors": assets.taesdxl_decoder,  # listed, never loaded here
        "vae/CogVideoX-2b-vae": assets.cogvideox,
    }
    audio = assets.extra.get("audio")
    if audio:  # Lumina-T2Music / T2Audio: the released folders and their text encoders
        links.update({"lumina/Lumina-T2Music": audio["music"], "lumina/Lumina-T2Audio": audio["audio"],
                      "text_encoders/flan-t5-large": audio["flan_t5"], "text_encoders/t5-v1_1-large": audio["t5_v1_1"],
                      "text_encoders/bert-base-uncased": audio["bert"]})
    made = []
    for name, target in links.items():
        link = models_dir / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(Path(target).resolve(), target_is_directory=Path(target).is_dir())
        made.append(link)
    return made
