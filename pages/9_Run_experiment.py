"""Run an experiment from the app: one background run at a time; results land in the cache."""
import streamlit as st

from qmoe.experiments import jobs
from qmoe.datasets import PROTOCOLS, list_datasets
from qmoe.core.errors import QmoeError
from qmoe.models.registry import list_variants
from qmoe.app.ui import dataset_task_names, paper_task_first, results

st.set_page_config(page_title="qmoe · Run experiment", page_icon="🎧", layout="wide")
st.title("Run an experiment")
st.markdown("Cross-validation runs go through the engine (`qmoe.experiments.experiment.run_grid`) in a background process and "
            "are cached under their full config: a run that is already cached is read back, not recomputed. "
            "Only one run at a time (a lock file under `results/`). CPU only: an MoE fold takes about a minute.")


@st.fragment(run_every=2)
def status():
    """Progress of the running job (any session's), refreshed every 2 s."""
    info = jobs.current_run()
    if info is not None:
        total, done = info.get("total"), info.get("done", 0)
        st.progress(done / total if total else 0.0,
                    text=f"Running (pid {info.get('pid')}): {done}/{total or '?'} runs done · {info.get('current', '')}")
        st.session_state["was_running"] = True
        return
    last = jobs.last_run()
    if st.session_state.pop("was_running", False):
        results.clear()  # the other pages see the new runs at once
    if last is not None:
        spec = last.get("spec", {})
        text = (f"Last run ({', '.join(spec.get('variants', []))}; finished {last.get('finished')}): "
                f"{last.get('message')}")
        (st.success if last.get("status") == "done" else st.error)(text)
    else:
        st.info("No experiment is running.")


status()

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
        info = jobs.start({"dataset": dataset, "tasks": tasks, "protocols": protocols, "variants": variants,
                           "folds": sorted(folds) or None})
    except jobs.RunInProgress as e:
        st.error(str(e))
    except QmoeError as e:
        st.error(f"Cannot start: {e}")
    else:
        st.success(f"Started (pid {info['pid']}): {len(variants)} variant(s) x {len(tasks)} task(s) x "
                   f"{len(protocols)} protocol(s) x {len(folds) or 'all'} fold(s). Progress shows above; the other pages "
                   "read the cache and update as runs finish.")
