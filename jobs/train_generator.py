"""Fine-tune the MeMa generator (Stable Diffusion) on the real patients of an archive, with Ray Train.

    ray job submit -- python jobs/train_generator.py --archive s3://bucket/archive --output s3://bucket/models/generator

`generator.base` in the config names the pretrained pipeline (a diffusers folder or S3 prefix, read
with local_files_only); the demo preset builds a tiny one and pretrains its VAE on the archive first.
Writes a complete pipeline (save_pretrained layout, LoRA fused) to --output, the LoRA weights to
<output>/lora for LoRA runs, generator.json with the figures and samples.png (one row per disease);
checkpoints go to <runs>/generator and a re-run resumes from them.
"""

import argparse
import json
import sys

from medeid.config import load_config
from medeid.mema.samples import write_sample_grid
from medeid.raycluster import init_ray
from medeid.storage import join
from medeid.train.generator import train_generator


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", required=True, help="archive root with metadata/ and photos/")
    parser.add_argument("--output", required=True, help="folder or S3 prefix for the fine-tuned pipeline")
    parser.add_argument("--runs", help="checkpoint storage (default <output>/../runs)")
    parser.add_argument("--config", default="demo", help="preset name or YAML file")
    parser.add_argument("--base", help="pretrained pipeline (overrides generator.base)")
    parser.add_argument("--finetune", choices=["lora", "full"], help="overrides generator.finetune")
    parser.add_argument("--epochs", type=int)
    args = parser.parse_args()
    config = load_config(args.config, {"generator.epochs": args.epochs, "generator.base": args.base,
                                       "generator.finetune": args.finetune})
    print("config:", json.dumps(config.to_dict()["generator"]), flush=True)

    init_ray()
    runs = args.runs or join(args.output.rstrip("/").rsplit("/", 1)[0], "runs")
    settings = config.storage.settings()
    figures = train_generator(args.archive, args.output, runs, config.generator, settings=settings)
    grid = write_sample_grid(args.output, config, settings=settings)
    print(f"[train_generator] {figures['finetune']} fine-tune of {figures['base']}: {figures['epochs']} epochs, "
          f"{figures['steps']} steps over {figures['photos']} photos, final loss {figures['final_loss']:.4f}, "
          f"{figures['train_s']:.0f} s; pipeline {figures['output']} (version {figures['version']}); samples {grid}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
