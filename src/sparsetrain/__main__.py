"""``python -m sparsetrain`` (also what ``torchrun -m sparsetrain train ...`` runs)."""

from sparsetrain.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
