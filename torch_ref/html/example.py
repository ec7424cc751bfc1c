"""The worked example's page (`backprop-check example --html FILE`): the seed's chain rule for w5
and w1, each factor as the post writes it, the value the manual engine computes, autograd's, the
figure the post prints and, where they differ beyond its printed digits, the erratum; then the
worked example's lockstep run, step by step."""
from .. import reports
from ..description import spec

# The post's factors, as it writes them (example.SEED's keys)
FACTORS = {
    "chain_w5.dE_dout_o1": "∂E_total/∂out_o1", "chain_w5.dout_o1_dnet_o1": "∂out_o1/∂net_o1",
    "chain_w5.dnet_o1_dw5": "∂net_o1/∂w5", "grads.w5": "∂E_total/∂w5 (the product)",
    "chain_w1.dEo1_dnet_o1": "∂E_o1/∂net_o1", "chain_w1.dnet_o1_dout_h1": "∂net_o1/∂out_h1 (= w5)",
    "chain_w1.dEo1_dout_h1": "∂E_o1/∂out_h1", "chain_w1.dEo2_dout_h1": "∂E_o2/∂out_h1",
    "chain_w1.dE_dout_h1": "∂E_total/∂out_h1", "chain_w1.dout_h1_dnet_h1": "∂out_h1/∂net_h1",
    "chain_w1.dnet_h1_dw1": "∂net_h1/∂w1", "grads.w1": "∂E_total/∂w1 (the product)",
}


def chain_rows(rep):
    """The rows of the chain rule for w5 and w1, in the post's order, with their errata."""
    errata = {e["figure"]: e for e in rep["errata"]}
    by = {r["figure"]: r for r in rep["rows"]}
    rows = []
    for figure, factor in FACTORS.items():
        r = by.get(figure)
        if r is None:
            continue
        e = errata.get(figure)
        why = None
        if e is not None:
            why = f"the post prints {e['seed']}, the correct value is {e['correct']!r}"
            if e.get("explained_by"):
                why += f" (explained by the mistake {e['explained_by']})"
        rows.append({"figure": figure, "factor": factor, "manual": r["manual"], "autograd": r["autograd"],
                     "seed": r["seed"], "erratum": why})
    return rows


def prepare(path):
    """Check the page's path before anything runs (SpecError naming --html)."""
    return reports.prepare(html=path)


def write(path, rep):
    """The worked example's page: its chain rule (from example.report()'s `rep`) and its lockstep run."""
    from . import recorder_for, write as write_page
    from ..example import spec_path
    from ..lockstep.run import lockstep
    desc = spec.load(spec_path())
    recorder = recorder_for(desc)
    result = lockstep(desc, record=recorder)
    write_page(path, result, desc, recorder, spec_path="worked_example",
               example={"rows": chain_rows(rep), "errata": len(rep["errata"])})
