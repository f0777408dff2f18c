"""How every ONNX Runtime session of qmoe is set up (the image backbone's and the deployed models'): one
intra-op thread unless asked, sequential execution, all graph optimizations, errors-only logging.

Imports onnxruntime only when called, so importing this module costs nothing.
"""


def session_options(threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only (unused-initializer notices are not news)
    return so
