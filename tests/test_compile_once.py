"""One compiled NUTS program serves every response and prior value of a model's shape: they are runtime data."""

from __future__ import annotations

import numpy as np
import pytest

import multilevel as mlv
from multilevel import nuts
from multilevel.centring import centred_design
from multilevel.collapsed import jax_data, log_density, make_layout
from multilevel.crossprod import cross_products
from multilevel.engine import Engine
from multilevel.priors import resolve_priors

FORMULA = "Reaction ~ 1 + Days + (1 + Days | Subject)"


def test_a_new_response_or_prior_value_compiles_nothing(sleep, tmp_path, monkeypatch):
    """brms's default prior scales follow y; a second fit on a new y must reuse the programs, not rebuild them."""
    import jax

    monkeypatch.setenv("MULTILEVEL_CACHE", str(tmp_path))  # no exports on disk: a new program would be traced here
    run = dict(chains=1, draws=50, warmup=50, seed=1, progress=False)
    mlv.Model(FORMULA, sleep).sample(**run)
    programs, compiles = len(nuts._PROGRAMS), []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(kwargs)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        post = mlv.Model(FORMULA, sleep.assign(Reaction=sleep.Reaction * 1.7 + 3)).sample(**run)
        mlv.Model(FORMULA, sleep).sample(**run, prior={"sd": mlv.prior.half_student_t(4, 30), "cor": mlv.prior.lkj(2)})
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert len(nuts._PROGRAMS) == programs
    assert compiles == []
    assert post.fixed_effects.loc["(Intercept)", "estimate"] == pytest.approx(1.7 * 251.4 + 3, rel=0.05)


def test_a_compiled_density_reads_prior_values_from_its_data_not_its_layout(sleep):
    """A layout equal in structure but holding another response's priors gives the density of the data passed."""
    nuts.setup_jax()
    import jax

    def parts(df):
        model = mlv.Model(FORMULA, df)
        design, _, intercept = centred_design(model.design)
        engine = Engine(cross_products(design), [b.k for b in design.blocks], [b.m for b in design.blocks])
        layout = make_layout(model, resolve_priors(model, None), design.p - 1, intercept)
        return layout, jax_data(engine, layout)

    (layout1, _), (layout2, data2) = parts(sleep), parts(sleep.assign(Reaction=sleep.Reaction * 1.7 + 3))
    assert layout1 == layout2 and layout1.priors != layout2.priors
    x = np.array([3.7, 2.3, 0.3, 3.8, 430.0])
    compiled = float(jax.jit(log_density, static_argnums=0)(layout1, data2, x))
    with jax.disable_jit():
        assert compiled == pytest.approx(float(log_density(layout2, data2, x)), rel=1e-12)
