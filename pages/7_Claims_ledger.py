"""The claims ledger: every numeric claim of the paper against our numbers, under both protocols."""
import qmoe  # noqa: F401  (first: fixes thread counts)
import streamlit as st

from qmoe.analysis.claims import FAILS, HOLDS, NOT_RUN, UNTESTABLE
from qmoe.app.ui import cached_ledger, csv_download, page_config

page_config("Claims ledger")
st.title("Claims ledger")
st.markdown("One row per numeric claim of the paper (abstract, Sec. 5, Tables 2–8, Appendix), with the paper's value, "
            "ours under the paper's protocol (shuffled folds, leaky) and under the leak-free predefined ESC-50 folds, "
            "the criterion we judge by, and a verdict. The overall verdict is the leak-free one when it exists. "
            "Claims whose runs are not cached yet say which command produces them. Latency, energy, CO₂ and RAM claims "
            "are judged on the deployed model on **ONNX Runtime** (what a device runs); the engine's torch path is "
            "shown beside them (`ours_torch_eager`, leak-free folds) so the runtime's part can be seen. Also written "
            "by `python -m qmoe claims` to `results/claims.csv`.")


table = cached_ledger()
counts = table["verdict"].value_counts()
cols = st.columns(4)
for col, v in zip(cols, (HOLDS, FAILS, NOT_RUN, UNTESTABLE)):
    col.metric(v, int(counts.get(v, 0)))

picked = st.multiselect("Show verdicts", [HOLDS, FAILS, NOT_RUN, UNTESTABLE], default=[HOLDS, FAILS, NOT_RUN, UNTESTABLE])
shown = table[table["verdict"].isin(picked)]
st.dataframe(shown, hide_index=True, width="stretch",
             column_order=["id", "verdict", "claim", "paper_value", "ours_predefined", "ours_paper", "runtime",
                           "ours_torch_eager", "verdict_torch_eager", "criterion", "location", "verdict_predefined",
                           "verdict_paper", "test", "n", "notes", "command"])
csv_download(shown, "qmoe-claims.csv")

if not shown.empty:
    cid = st.selectbox("Claim in detail", list(shown["id"]))
    r = shown.set_index("id").loc[cid]
    st.markdown(f"### {r['claim']}\n"
                f"*{r['location']}* — paper: **{r['paper_value']}**\n\n"
                f"- Criterion: {r['criterion'] or '—'}\n"
                f"- Ours, predefined folds (leak-free): {r['ours_predefined'] or '—'} → **{r['verdict_predefined']}**\n"
                f"- Ours, paper protocol (leaky): {r['ours_paper'] or '—'} → **{r['verdict_paper']}**\n"
                + (f"- Runtime of these figures: {r['runtime']}; on torch eager (leak-free): "
                   f"{r['ours_torch_eager'] or '—'} → **{r['verdict_torch_eager'] or '—'}**\n" if r["runtime"] else "")
                + f"- Verdict: **{r['verdict']}**" + (f" ({r['verdict_basis']})" if r["verdict_basis"] else "") + "\n"
                f"- Test: {r['test'] or '—'}" + (f", n = {r['n']}" if str(r["n"]) not in ("<NA>", "nan") else "") + "\n"
                + (f"- Notes: {r['notes']}\n" if r["notes"] else "")
                + (f"- To run: `{r['command']}`\n" if r["command"] else ""))
