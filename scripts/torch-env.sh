# Sourced (not run) by scripts that build or run the trainer: makes sure the pip torch venv exists
# and points tch's build script and the dynamic loader at its libtorch (docs/DESIGN.md §6).
#   source scripts/torch-env.sh
_mirage_python="$("$(dirname "${BASH_SOURCE[0]}")/setup-python.sh" | tail -n1)"
_mirage_venv="$(dirname "$(dirname "$_mirage_python")")"
export VIRTUAL_ENV="$_mirage_venv"
export PATH="$_mirage_venv/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
_mirage_torch_lib="$("$_mirage_python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$_mirage_torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export MIRAGE_TORCH_PYTHON="$_mirage_python"
unset _mirage_python _mirage_venv _mirage_torch_lib
