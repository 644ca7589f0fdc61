from django.core.management.base import BaseCommand, CommandError

from workers.demo_model import SIZES, build_demo_model


class Command(BaseCommand):
    help = (
        "Build the offline demo model (byte-level BPE tokenizer trained on local text, chat "
        "template, random-init Llama) into PATH, loadable with from_pretrained."
    )

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--size", default="tiny", choices=sorted(SIZES))
        parser.add_argument("--force", action="store_true", help="Rebuild even if present.")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, path, size, force, seed, **options):
        try:
            out = build_demo_model(
                path, size, force=force, seed=seed, progress=lambda m: self.stdout.write(m)
            )
        except OSError as exc:
            raise CommandError(f"could not write the model to {path}: {exc}") from exc
        self.stdout.write(self.style.SUCCESS(f"demo model ({size}) ready at {out}"))
