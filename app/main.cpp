// `lightserve`: one binary, subcommands.
#include <CLI/CLI.hpp>

#include "app/subcommands.h"

int main(int argc, char** argv) {
  CLI::App app{
      "lightserve: a serving engine for LLaMA-family models with LightTransfer (lazy layers served "
      "from constant-size sink + recent-window KV)."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "lightserve 0.1.0");
  lightserve::cli::register_generate(app);
  lightserve::cli::register_info(app);
  lightserve::cli::register_calibrate(app);
  lightserve::cli::register_eval(app);
  lightserve::cli::register_bench(app);
  lightserve::cli::register_serve(app);
  lightserve::cli::register_export(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version print and exit 0; every invalid option (unknown flag, a value that is
    // not a number, a missing subcommand) is a usage error: CLI11's message, exit 2.
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  return lightserve::cli::exit_code();
}
