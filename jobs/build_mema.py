"""Build MeMa: synthetic patient faces generated from the real cohort's statistics, filtered for
privacy (no face close to a real patient) and plausibility (the medical classifier agrees).

    ray job submit -- python jobs/build_mema.py --archive s3://bucket/archive --models s3://bucket/models \
        --output s3://bucket/mema

--models is a folder holding generator/, recognizer/, evaluator/ and medical/ (what train_generator,
train_identity and train_medical write); each can be named on its own instead. Writes, under --output,
shards/ (the released images), rejections/, conditions/, statistics.json, audit/ and card/README.md,
and ends with `sampled = released + rejected`. A re-run carries on where the last one stopped and
writes nothing twice; --overwrite starts afresh. --compare-strategies instead writes strategies.png:
the same conditions drawn by txt2img, img2img and inpainting.
"""

import argparse
import io
import json
import sys

from medeid import codecs, storage
from medeid.config import load_config
from medeid.mema.build import PRIVATE, build_mema
from medeid.models.identity import centred_crop
from medeid.pipelines.mema import Models, SourcePicker
from medeid.pipelines.synthetic_archive import read_metadata
from medeid.raycluster import init_ray


def models_from(args) -> Models:
    def pick(name: str) -> str | None:
        given = getattr(args, name)
        return given or (storage.join(args.models, name) if args.models else None)

    missing = [n for n in ("generator", "recognizer", "medical") if not pick(n)]
    if missing:
        sys.exit(f"build_mema: name --models, or each of {', '.join('--' + n for n in missing)}")
    return Models(generator=pick("generator"), recognizer=pick("recognizer"), medical=pick("medical"),
                  evaluator=pick("evaluator"), index=args.index or storage.join(args.output, PRIVATE, "identity_index"))


def compare(args, config, models: Models) -> str:
    from medeid.mema.generation import FaceGenerator
    from medeid.mema.samples import SHOWCASE, compare_strategies
    from medeid.models.generator import load_pipeline
    from medeid.synth.contact_sheet import image_grid

    settings = config.storage.settings()
    picker = SourcePicker(read_metadata(args.archive, settings))
    sources = []
    for i, (disease, (laterality, _, _)) in enumerate(SHOWCASE.items()):
        key, mask_key = picker.pick({"sample_id": disease, "disease": disease, "laterality": laterality}, i)
        image = codecs.decode(storage.read_bytes(storage.join(args.archive, key), settings))
        mask = codecs.decode(storage.read_bytes(storage.join(args.archive, mask_key), settings), "L") > 127 \
            if mask_key else None
        sources.append((image, mask))
    generator = FaceGenerator(load_pipeline(models.generator, settings), config.mema.steps, config.mema.guidance,
                              config.mema.strength)
    images, rows, columns = compare_strategies(generator, config.generator.prompt_template,
                                               [(centred_crop(s, generator.resolution), m)
                                                for s, m in sources])
    buffer = io.BytesIO()
    image_grid(images, rows, columns).save(buffer, format="PNG")
    uri = storage.join(args.output, "strategies.png")
    storage.write_bytes(uri, buffer.getvalue(), settings)
    return uri


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", required=True, help="the real archive: metadata/ and photos/")
    parser.add_argument("--output", required=True, help="folder or S3 prefix for MeMa")
    parser.add_argument("--models", help="folder with generator/, recognizer/, evaluator/, medical/")
    for name in ("generator", "recognizer", "evaluator", "medical"):
        parser.add_argument(f"--{name}", help=f"the {name} (default <models>/{name})")
    parser.add_argument("--index", help="identity index of the real patients (default <output>/private/identity_index, "
                                        "built when missing)")
    parser.add_argument("--config", default="demo", help="preset name or YAML file")
    parser.add_argument("--samples", type=int, help="condition rows (overrides mema.samples)")
    parser.add_argument("--strategy", choices=["txt2img", "img2img", "inpaint"], help="overrides mema.strategy")
    parser.add_argument("--overwrite", action="store_true", help="delete what an earlier run wrote and start afresh")
    parser.add_argument("--compare-strategies", action="store_true",
                        help="only draw the same conditions with every strategy into <output>/strategies.png")
    args = parser.parse_args()
    config = load_config(args.config, {"mema.samples": args.samples, "mema.strategy": args.strategy})
    models = models_from(args)
    print("config:", json.dumps(config.to_dict()["mema"]), flush=True)

    init_ray()
    if args.compare_strategies:
        print(f"[build_mema] strategies compared in {compare(args, config, models)}", flush=True)
        return 0
    result = build_mema(args.archive, models, args.output, config, overwrite=args.overwrite,
                        settings=config.storage.settings())
    stages = ", ".join(f"{stage} {n}" for stage, n in result.rejected_by_stage.items())
    print(f"[build_mema] {result.rounds} rounds in {result.seconds:.0f} s; card {result.card}", flush=True)
    print(f"[build_mema] sampled {result.sampled} = released {result.released} + rejected {result.rejected} "
          f"({stages})", flush=True)
    print(f"[build_mema] requested {result.requested} = released {result.released} + unfilled {result.unfilled}: "
          f"{'reconciled' if result.reconciled else 'NOT RECONCILED'}", flush=True)
    return 0 if result.reconciled else 1


if __name__ == "__main__":
    sys.exit(main())
