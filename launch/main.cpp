// `moetrain`: parse the command line once, run the subcommand. An error on
// any rank aborts the whole job, so no rank is left waiting in a collective.
#include <fmt/format.h>
#include <mpi.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <thread>

#include "launch/cli.h"
#include "launch/commands.h"
#include "runtime/check.h"
#include "runtime/heap.h"

int main(int argc, char** argv) {
  mt::keep_freed_memory_in_heap();
  // --async-save writes checkpoints from a thread of its own.
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  mt::set_error_rank(rank);

  auto cli = mt::make_cli();
  try {
    mt::parse_command_line(*cli, argc, argv);
  } catch (const CLI::ParseError& e) {
    // Every rank parses the same arguments, so every rank exits here.
    const int rc = rank == 0 ? cli->app->exit(e) : (e.get_exit_code() == 0 ? 0 : 1);
    MPI_Finalize();
    return rc;
  } catch (const std::exception& e) {
    fmt::print(stderr, "moetrain: error: {}\n", e.what());
    MPI_Finalize();
    return 1;
  }

  try {
    if (cli->train->parsed()) {
      mt::run_train(cli->train_options);
    } else if (cli->eval->parsed()) {
      mt::EvalResult r = mt::run_eval(cli->eval_options);
      if (rank == 0)
        fmt::print("{}\n", nlohmann::json{{"loss", r.loss}, {"tokens", r.tokens}, {"samples", r.samples}}.dump());
    } else if (cli->generate->parsed()) {
      const std::vector<mt::Generation> done = mt::run_generate(cli->generate_options);
      for (const mt::Generation& g : done)
        if (rank == 0)
          fmt::print("{}\n", nlohmann::json{{"prompt", g.prompt},
                                            {"completion", g.completion},
                                            {"tokens", g.tokens},
                                            {"tokens_per_s", g.tokens_per_s},
                                            {"margins", g.margins}}
                                 .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    } else if (cli->plan->parsed()) {
      if (rank == 0) mt::run_plan(cli->plan_options);
    } else if (cli->prepare_data->parsed()) {
      if (rank == 0) mt::run_prepare_data(cli->prepare_options);
    } else if (cli->train_tokenizer->parsed()) {
      if (rank == 0) mt::run_train_tokenizer(cli->train_tokenizer_options);
    } else if (cli->inspect->parsed()) {
      mt::run_inspect(cli->inspect_options);  // rank 0 reads, the others return
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "moetrain: error: {}\n", e.what());
    std::fflush(stderr);
    if (world > 1) {
      // Ranks that fail at the same point (a bad flag fails on all of
      // them) each get to name it before the first abort ends the job.
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Finalize();
    return 1;
  }
  MPI_Finalize();
  return 0;
}
