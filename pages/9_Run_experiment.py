"""Run an experiment from the app: a grid of registered variants or a sweep, one background job at a time, with
progress, ETA and cancel; results land in the cache."""
import streamlit as st

from qmoe.app import sweeps
from qmoe.app.ui import dataset_task_names, page_config, paper_task_first
from qmoe.core.errors import QmoeError
from qmoe.datasets import PROTOCOLS, list_datasets
from qmoe.experiments import jobs
from qmoe.models.registry import get_variant, list_variants

page_config("Run experiment")
st.title("Run an experiment")
st.markdown("Cross-validation runs go through the engine in one background job on both cores and are cached under "
            "their full config: a run that is already cached is read back, not recomputed. One job at a time (a "
            "lock file under `results/`), from any session; it shows its progress and ETA below and can be "
            "cancelled (finished runs stay cached, each whole). CPU only: an MoE-C fold takes about half a minute.")


def draw(job):
    """The last or running sweep's F1 curve(s) against what it varies (alpha, bits) and its points, new ones
    starred."""
    got = sweeps.job_points(job)
    if got is None:
        return
    points, curve = got
    if curve.empty:
        st.info("No point of this sweep has finished yet.")
        return
    axes = [x for x in ("alpha", "bits") if curve[x].nunique() > 1] or ["alpha" if curve["alpha"].notna().any()
                                                                         else "bits"]
    for x, column in zip(axes, st.columns(len(axes))):
        column.plotly_chart(sweeps.curve_figure(curve[curve[x].notna()], x, "f1_mean", "f1_std",
                                                f"Macro-F1 (± fold std) against {x}", log_x=x == "bits"),
                            width="stretch", key=f"run-f1-{x}")
    sweeps.new_points_note(curve, axes[0])
    with st.expander(f"Points of the sweep ({int(points['cached'].sum())}/{len(points)} runs cached, "
                     f"{int(points['new'].sum())} computed by it)", expanded=bool(jobs.current_run())):
        st.dataframe(curve.drop(columns=["dataset", "selection"], errors="ignore"), hide_index=True, width="stretch")


sweeps.job_panel("run", draw, idle="No experiment is running.")

OWN_FOLDER = "your own folder..."
c = st.columns([1, 2])
dataset = c[0].selectbox("Dataset", list_datasets() + [OWN_FOLDER],
                         help="folder:<name> = a folder dataset under data/folders/ (e.g. `python -m qmoe data "
                              "esc50-folder`); UrbanSound8K / Quinn / esc50-audio need `python -m qmoe data download`")
if dataset == OWN_FOLDER:
    path = c[1].text_input("Folder on this machine: one sub-folder of clips per class (optional folds.csv)",
                           placeholder="/path/to/my_sounds")
    if not path.strip():
        st.stop()
    dataset = f"folder:{path.strip()}"
try:
    known_tasks = paper_task_first(dataset_task_names(dataset))
except QmoeError as e:
    st.error(f"Cannot use {dataset}: {e}")
    st.stop()

moe_bases = sweeps.moe_bases()
single_variants = [v for v in list_variants() if get_variant(v).family != "moe"]
grid_tab, sweep_tab = st.tabs(["Grid of registered variants", "Sweep (alphas, bits, expert sets, MoE options)"])
with grid_tab:
    with st.form("run"):
        c = st.columns(2)
        tasks = c[0].multiselect("Task", known_tasks, default=known_tasks[:1],
                                 help="major = ESC-50's 5 categories (the paper's task); class = the 50 classes, "
                                      "or a folder dataset's class folders")
        protocols = c[1].multiselect("Protocol", list(PROTOCOLS), default=["predefined"],
                                     format_func=lambda p: f"{p}: {PROTOCOLS[p]}")
        folds = c[0].multiselect("Folds (none picked = all of the dataset's folds)", list(range(1, 11)),
                                 help="ESC-50, Quinn and folder datasets have 5 folds; UrbanSound8K has 10")
        variants = c[1].multiselect("Variants", list_variants(), default=["Q4-Base"])
        submitted = st.form_submit_button("Run")

    if submitted:
        try:
            jobs.start({"dataset": dataset, "tasks": tasks, "protocols": protocols, "variants": variants,
                        "folds": sorted(folds) or None})
        except jobs.RunInProgress as e:
            st.error(str(e))
        except QmoeError as e:
            st.error(f"Cannot start: {e}")
        else:
            st.rerun()  # the panel above follows the job; the other pages read the cache as runs land

with sweep_tab:
    st.caption("Any alphas, bit-widths, expert sets and MoE options at once: every combination of the MoE values is "
               "applied to every MoE picked (and to an MoE of the expert set, the paper's MoE-C recipe otherwise); "
               "single models run as they are. Points that differ only at inference time share one training.")
    c = st.columns(2)
    s_tasks = c[0].multiselect("Task", known_tasks, default=known_tasks[:1], key="s-tasks")
    s_protocol = c[1].selectbox("Protocol", list(PROTOCOLS), format_func=lambda p: f"{p}: {PROTOCOLS[p]}",
                                key="s-protocol")
    s_variants = c[0].multiselect("Variants (MoE or single)", moe_bases + single_variants,
                                  default=["BitNet-Q4/8-QMoE-C"], key="s-variants")
    s_alphas = c[1].text_input("alphas (MoE)", "0.3", key="s-alphas")
    s_bits = c[0].multiselect("Bit-widths (Q<k>-Base)", list(range(1, 17)), key="s-bits")
    s_experts = c[1].multiselect("An expert set of your own (an MoE of these)", single_variants, key="s-experts")
    st.markdown("MoE options, prefilled with the first MoE's own (only changed values go into a run's name):")
    read_options = sweeps.moe_option_inputs(None if s_experts or not s_variants else
                                              next((v for v in s_variants if v in moe_bases), None),
                                              "s-moe")
    read_folds = sweeps.fold_and_seed_inputs(dataset, s_protocol, "s-folds")
    if st.button("Start the sweep", type="primary"):
        def make_sweep():
            folds, seeds = read_folds()
            has_moe = any(v in moe_bases for v in s_variants) or s_experts
            return {"variants": s_variants, "bits": s_bits, "experts": [s_experts] if s_experts else [],
                    "alphas": sweeps.parse_values(s_alphas, float, "alphas") if has_moe else [],
                    "moe": read_options() if has_moe else {}, "dataset": dataset, "tasks": s_tasks,
                    "protocols": [s_protocol], "folds": folds, "seeds": seeds}
        sweeps.start(make_sweep)
