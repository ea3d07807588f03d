"""`python -m multilevel`: the demo (fit sleepstudy by REML and print the result); with arguments, the `multilevel`
command (`python -m multilevel fit data.csv "y ~ x + (1 | g)"`, `python -m multilevel --help`)."""

import sys

import multilevel as mlv


def main() -> None:
    if sys.argv[1:]:  # arguments are the command line's (before: ignored, `--help` ran the demo)
        from multilevel.cli import main as command

        command()
        return
    model = mlv.Model("Reaction ~ 1 + Days + (1 + Days | Subject)", mlv.datasets.load("sleepstudy"))
    print(model.fit().summary())


if __name__ == "__main__":
    main()
