"""`python -m multilevel`: the demo — fit sleepstudy by REML and print the result."""

import multilevel as mlv


def main() -> None:
    model = mlv.Model("Reaction ~ 1 + Days + (1 + Days | Subject)", mlv.datasets.load("sleepstudy"))
    print(model.fit().summary())


if __name__ == "__main__":
    main()
