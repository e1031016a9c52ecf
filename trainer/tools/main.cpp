// The `ladder` command: one binary, one subcommand per task. Every user mistake ends here as
//     ladder: error: <where>: <what>
// with exit status 2 (core/error.h); --help on any subcommand exits 0.
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/hdf5.h"
#include "core/log.h"
#include "core/memory.h"
#include "core/trace_schema.h"
#include "data/dataset.h"
#include "data/prep.h"
#include "parallel/world.h"
#include "scaling/fit_command.h"
#include "trainer/recipe/recipe.h"
#include "trainer/run/hardware.h"
#include "trainer/run/memory_estimate.h"
#include "trainer/run/run_context.h"
#include "trainer/run/train.h"
#include "trainer/sweep/sweep_runner.h"
#include "trainer/tools/coordcheck.h"
#include "trainer/tools/export.h"
#include "trainer/tools/inference.h"
#include "trainer/tools/inspect.h"
#include "trainer/tools/loss_plot.h"

namespace {

using ladder::Error;

struct GlobalOptions {
  std::string log_level = "info";
  bool log_all_ranks = false;
};

void init_logging(const GlobalOptions& g, int rank) {
  ladder::LogOptions options;
  options.rank = rank;
  options.all_ranks_to_console = g.log_all_ranks;
  options.level = ladder::parse_log_level(g.log_level);
  ladder::init_logging(options);
}

// ----- ladder prep ------------------------------------------------------------------------------

struct PrepCommand {
  ladder::data::PrepOptions options;

  void add(CLI::App& app) {
    auto* cmd = app.add_subcommand(
        "prep", "Tokenize text (plain, gzip, JSONL; files or folders) into token shards");
    cmd->add_option("--input,-i", options.inputs,
                    "Input files or folders, [DOMAIN=]PATH (repeatable)")
        ->required();
    cmd->add_option("--out,-o", options.out_dir, "Output dataset folder")->required();
    cmd->add_option("--tokenizer", options.tokenizer, "bytes | sentencepiece | hf")
        ->capture_default_str();
    cmd->add_option("--tokenizer-file", options.tokenizer_file,
                    "hf: a Hugging Face tokenizer.json (byte-level BPE: GPT-2, Llama-3, Qwen2, "
                    "NeoX style)");
    cmd->add_option("--eod-token", options.eod_token,
                    "hf: the token ending each document (default: tokenizer_config.json's "
                    "eos_token beside the file, else <|endoftext|>, <|end_of_text|>, </s>, ...)");
    cmd->add_option("--vocab-size", options.sp.vocab_size, "SentencePiece vocabulary size")
        ->capture_default_str();
    cmd->add_option("--sp-type", options.sp.model_type, "SentencePiece model: bpe | unigram")
        ->capture_default_str();
    cmd->add_option("--sp-model", options.sp_model,
                    "Use this SentencePiece .model instead of training one");
    cmd->add_option("--sp-sentences", options.sp.max_sentences,
                    "Lines sampled to train SentencePiece")
        ->capture_default_str();
    cmd->add_option("--val-fraction", options.val_fraction,
                    "Fraction of documents held out for validation")
        ->capture_default_str();
    cmd->add_option("--seed", options.seed, "Seeds the document-level split")
        ->capture_default_str();
    cmd->add_option("--shard-tokens", options.shard_tokens, "Tokens per shard (about)")
        ->capture_default_str();
    cmd->add_option("--threads", options.threads, "Tokenizer threads")->capture_default_str();
    cmd->add_option("--jsonl-field", options.jsonl_field,
                    "JSONL field (or Parquet column) holding the text")
        ->capture_default_str();
    cmd->add_option("--domain-field", options.domain_field,
                    "JSONL field naming each document's domain (or name an input's domain as "
                    "--input DOMAIN=PATH)");
    cmd->add_flag("--force", options.force, "Replace an existing dataset in --out");
  }

  int run(const GlobalOptions& g) {
    init_logging(g, 0);
    options.sp.threads = options.threads;
    const auto r = ladder::data::run_prep(options);
    const uint64_t tokens = r.train_tokens + r.val_tokens;
    spdlog::info("prep: wrote {}", options.out_dir);
    std::printf("dataset        %s\n", options.out_dir.c_str());
    std::printf("tokenizer      %s (vocab %u)\n", options.tokenizer.c_str(), r.vocab_size);
    std::printf("train          %llu documents, %llu tokens\n",
                static_cast<unsigned long long>(r.train_documents),
                static_cast<unsigned long long>(r.train_tokens));
    std::printf("val            %llu documents, %llu tokens\n",
                static_cast<unsigned long long>(r.val_documents),
                static_cast<unsigned long long>(r.val_tokens));
    if (!r.domains.empty()) {
      std::string names;
      for (const auto& d : r.domains)
        names += (names.empty() ? "" : " ") + d;
      std::printf("domains        %zu: %s\n", r.domains.size(), names.c_str());
    }
    std::printf("input          %.2f MB, %.3f bytes/token\n", r.input_bytes / 1e6,
                r.bytes_per_token());
    if (r.tokenizer_seconds > 0) std::printf("tokenizer fit  %.1f s\n", r.tokenizer_seconds);
    std::printf("tokenize       %.2f s, %.2f M tokens/s\n", r.encode_seconds,
                tokens / 1e6 / r.encode_seconds);
    std::printf("total          %.2f s\n", r.seconds);
    return 0;
  }
};

// ----- ladder train -----------------------------------------------------------------------------

struct TrainCommand {
  std::string recipe_path;
  std::vector<std::string> overrides;
  bool check = false;
  std::string resume, init_from, branch_from;
  int threads = 0;

  void add(CLI::App& app) {
    auto* cmd = app.add_subcommand("train", "Train a model from a TOML recipe");
    cmd->add_option("recipe", recipe_path, "Recipe file (recipes/README.md)")->required();
    cmd->add_option("--set", overrides,
                    "Override a recipe key: --set section.key=value (repeatable)");
    cmd->add_option("--resume", resume,
                    "auto: continue from the run's newest checkpoint (or start fresh); or a "
                    "checkpoint path");
    cmd->add_option("--init-from", init_from,
                    "Start from another run's checkpoint: parameters whose names and shapes match "
                    "are loaded, new ones initialised (ParScale's second stage)")
        ->excludes(cmd->get_option("--resume"));
    cmd->add_option("--branch-from", branch_from,
                    "Branch from another run's checkpoint: its whole state restored (weights, "
                    "AdamW, data position, RNG), then this recipe's length and schedule end (a "
                    "cooldown); the recipe may differ only in length, schedule end, outputs and "
                    "layout")
        ->excludes(cmd->get_option("--init-from"));
    cmd->add_option("--threads", threads,
                    "LibTorch threads per rank: the same as --set train.threads=N (default: the "
                    "cores of this node / ranks on it)");
    cmd->add_flag("--check", check,
                  "Validate the recipe for this world size, print it resolved, and exit");
  }

  int run(const GlobalOptions& g, int* argc, char*** argv) {
    ladder::parallel::MpiWorld world(argc, argv);
    init_logging(g, world.rank());

    // Every rank validates; then all agree, so a bad recipe ends every rank with status 2 and one
    // message, and a failure on some ranks only (a file missing on one node) still ends them all.
    // Threads, device and precision are resolved here, so that the printed recipe says what runs.
    if (threads > 0) overrides.push_back("train.threads=" + std::to_string(threads));
    ladder::Recipe recipe;
    if (const int status = ladder::parallel::check_on_every_rank(world, [&] {
          recipe = ladder::load_recipe(recipe_path, {overrides, world.size(), {}});
          ladder::resolve_threads_and_device(recipe, world);
        }))
      return status;
    ladder::resolve_precision(recipe, world);
    if (world.rank() == 0) std::cout << ladder::resolved_recipe_toml(recipe) << std::flush;
    if (check) {
      // What a rank needs against what it has; a run that cannot fit fails the check.
      return ladder::parallel::check_on_every_rank(world, [&] {
        ladder::data::DatasetMeta meta;
        try {
          meta = ladder::data::DatasetMeta::read(recipe.data.path);
        } catch (const ladder::Error& e) {  // the vocabulary is the dataset's: no estimate yet
          if (world.rank() == 0)
            std::cout << "# memory per rank: estimated once data.path holds a dataset (" << e.what()
                      << ")\n"
                      << std::flush;
          return;
        }
        // The mixture's sources and the eval sets, each in its dataset with data.path's tokenizer.
        if (!recipe.data.mixture.empty() || !recipe.eval.sets.empty())
          ladder::open_run_data(recipe);
        const auto estimate = ladder::estimate_memory(recipe, meta.vocab_size);
        const double available = ladder::memory_per_rank(recipe, world);
        if (world.rank() == 0)
          std::cout << "# " << ladder::describe_memory(estimate, available) << "\n" << std::flush;
        ladder::check_memory_fits(estimate, available);
      });
    }
    const int status = ladder::parallel::run_or_abort(world, [&] {
      return ladder::train(recipe, {resume, init_from, branch_from, recipe_path}, world);
    });
    // After a failed write (a checkpoint's or the trace's), HDF5's shutdown at MPI_Finalize would
    // crash on the file it could not close (core/hdf5.h): the message is out, end here.
    if (ladder::h5::close_failed()) {
      std::fflush(nullptr);
      std::_Exit(status);
    }
    return status;
  }
};

struct InspectCommand {
  std::vector<std::string> paths;
  bool spectra = false, verify = false, trace_schema = false;
  void add(CLI::App& app) {
    auto* cmd = app.add_subcommand(
        "inspect", "Summarise a checkpoint, a trace or a dataset; or compare runs' spectra");
    cmd->add_option("paths", paths,
                    "A checkpoint (.h5), a trace (trace.h5) or a dataset folder; with --spectra, "
                    "traces or folders of runs");
    cmd->add_flag("--trace-schema", trace_schema,
                  "Print the trace format (its columns and attributes) as Markdown: "
                  "docs/training.md's section is this, generated");
    cmd->add_flag("--spectra", spectra,
                  "The hidden matrices' top singular values of every run found, against width");
    cmd->add_flag("--verify", verify,
                  "Check checkpoints (files, or every checkpoint of run folders) for completeness "
                  "and against their checksums; exit 2 if any is damaged");
  }
  int run(const GlobalOptions& g) {
    init_logging(g, 0);
    if (trace_schema) {
      std::cout << ladder::trace_schema::markdown();
      return 0;
    }
    if (paths.empty()) throw ladder::Error("ladder inspect", "a path is required (see --help)");
    if (verify) {
      ladder::verify_checkpoints(paths);
      return 0;
    }
    if (spectra) {
      ladder::inspect_spectra(paths);
      return 0;
    }
    if (paths.size() != 1)
      throw ladder::Error("ladder inspect", "one path at a time (or --spectra for several runs)");
    ladder::inspect(paths.front());
    return 0;
  }
};

// ----- ladder sample ----------------------------------------------------------------------------

struct SampleCommand {
  ladder::SampleOptions options;
  void add(CLI::App& app) {
    auto* cmd = app.add_subcommand(
        "sample", "Generate text from a checkpoint (KV cache; Mamba-2 layers by their state)");
    cmd->add_option("checkpoint", options.checkpoint, "A checkpoint (.h5)")->required();
    cmd->add_option("--prompt", options.prompt, "The text to continue (may be empty)");
    cmd->add_option("--tokens", options.tokens, "New tokens at most")->capture_default_str();
    cmd->add_option("--temperature", options.temperature, "0: always the most likely token")
        ->capture_default_str();
    cmd->add_option("--top-k", options.top_k, "Draw from the k most likely tokens (0: all)")
        ->capture_default_str();
    cmd->add_option("--seed", options.seed, "The same seed gives the same text")
        ->capture_default_str();
    cmd->add_option("--data", options.data,
                    "The dataset folder whose tokenizer to use (default: the recipe's data.path)");
    cmd->add_option("--threads", options.threads,
                    "LibTorch threads (default: the machine's cores)");
  }
  int run(const GlobalOptions& g) {
    init_logging(g, 0);
    const ladder::SampleResult r = ladder::sample(options);
    std::printf("%s%s\n", options.prompt.c_str(), r.text.c_str());
    std::fflush(stdout);
    spdlog::info("sample: {} tokens in {:.2f} s ({:.1f} tokens/s){}", r.generated, r.seconds,
                 r.seconds > 0 ? static_cast<double>(r.generated) / r.seconds : 0.0,
                 r.ended ? ", stopped at an end of document" : "");
    return 0;
  }
};

// ----- ladder export ----------------------------------------------------------------------------

struct ExportCommand {
  ladder::ExportOptions options;
  void add(CLI::App& app) {
    auto* cmd = app.add_subcommand(
        "export", "Write a checkpoint's dense model as a Hugging Face transformers folder");
    cmd->add_option("checkpoint", options.checkpoint, "A checkpoint (.h5)")->required();
    cmd->add_option("--format", options.format, "hf (transformers: config, safetensors, tokenizer)")
        ->capture_default_str();
    cmd->add_option("--out", options.out, "The folder to write")->required();
    cmd->add_option("--data", options.data,
                    "The dataset folder whose tokenizer to export (default: the recipe's "
                    "data.path)");
  }
  int run(const GlobalOptions& g) {
    init_logging(g, 0);
    ladder::export_checkpoint(options);
    std::printf("export: %s (load with transformers' AutoModelForCausalLM.from_pretrained)\n",
                options.out.c_str());
    return 0;
  }
};

// ----- ladder plot ------------------------------------------------------------------------------

struct PlotCommand {
  ladder::LossPlotOptions options;
  void add(CLI::App& app) {
    auto* cmd = app.add_subcommand(
        "plot", "Training and validation loss curves of one or more runs on one PNG (gnuplot)");
    cmd->add_option("runs", options.runs, "Run folders (or their trace.h5)")->required();
    cmd->add_option("--x", options.x, "tokens | flops | step")->capture_default_str();
    cmd->add_option("--log", options.log, "Logarithmic axes: x | y | xy");
    cmd->add_option("--out", options.out,
                    "The PNG (default: RUN/loss.png for one run, loss.png for several)");
    cmd->add_option("--eval", options.eval_set,
                    "Plot this eval set's loss (a name of the recipe's eval.sets) instead of the "
                    "validation split's");
    cmd->add_flag("--per-byte", options.per_byte,
                  "Validation losses in nats per byte (runs with different tokenizers compare); "
                  "leaves the training curves out");
  }
  int run(const GlobalOptions& g) {
    init_logging(g, 0);
    std::printf("plot: %s\n", ladder::plot_losses(options).c_str());
    return 0;
  }
};

// ----- ladder fit -------------------------------------------------------------------------------

struct FitCommand {
  ladder::scaling::FitCommand c;
  void add(CLI::App& app) {
    c.fit.bootstrap = 200;
    auto* cmd = app.add_subcommand(
        "fit", "Fit scaling laws to run traces or CSV points (law, intervals, fit.json, plots)");
    cmd->add_option("inputs", c.inputs,
                    "Run folders (searched recursively for trace.h5), trace.h5 or CSV files")
        ->required();
    cmd->add_option("--law", c.law,
                    "chinchilla | parscale | kaplan-n | kaplan-c | routed | fine-grained | isoflop "
                    "| mixture")
        ->capture_default_str();
    cmd->add_option("--out", c.out_dir, "Folder for fit.json and the plots")->capture_default_str();
    cmd->add_option("--bootstrap", c.fit.bootstrap, "Bootstrap resamples for 95% intervals")
        ->capture_default_str();
    cmd->add_option("--seed", c.fit.seed, "Seed of the bootstrap resampling")
        ->capture_default_str();
    cmd->add_option("--starts", c.fit.starts,
                    "L-BFGS runs from the best grid points (0: from every grid point)")
        ->capture_default_str();
    cmd->add_option("--delta", c.fit.huber_delta, "Huber delta on log-loss residuals")
        ->capture_default_str();
    cmd->add_option(
           "--holdout", c.holdout,
           "Keep the K largest model sizes out of the fit (--law mixture: the last K runs of "
           "the inputs; --law hyperparameters: the K cells of most compute) and report the "
           "prediction error")
        ->capture_default_str();
    cmd->add_option("--drop-first", c.points.drop_first,
                    "Drop each run's points before this fraction of its tokens")
        ->capture_default_str();
    cmd->add_flag("--final-only", c.points.final_only, "Use only the last point of each run");
    cmd->add_option("--kind", c.points.kinds,
                    "The kinds of points to fit: run, cooldown (a branch: the run of its length), "
                    "stable (a constant-rate stable run's evaluations), average (the averaged "
                    "weights' losses); comma-separated or repeated")
        ->delimiter(',')
        ->capture_default_str();
    cmd->add_flag("--in-compute", c.in_compute,
                  "--law hyperparameters: the optima as power laws of C = 6 N D (DeepSeek's form) "
                  "instead of N and D");
    cmd->add_option("--eval", c.points.eval_set,
                    "Fit the losses of this eval set (a name of the runs' eval.sets) instead of "
                    "the validation split's");
    cmd->add_option("--filter", c.points.filters,
                    "Keep points whose attribute matches: key=value (repeatable)");
    cmd->add_flag(
        "--lr-transfer", [this](int64_t) { c.transfer = "lr"; },
        "Optimal learning rate per width (or depth: --along) as a parabola in log lr, instead "
        "of a law");
    cmd->add_flag(
        "--wd-transfer", [this](int64_t) { c.transfer = "weight_decay"; },
        "Optimal weight decay (the runs' weight_decay) per width (or depth: --along) instead of "
        "a law");
    cmd->add_option("--along", c.transfer_axis,
                    "The axis of --lr-transfer / --wd-transfer: width (d_model) or depth "
                    "(layers): one optimum per width, or per depth")
        ->capture_default_str();
    cmd->add_flag(
        "--no-plots", [this](int64_t) { c.plots = false; }, "Write no plots");
  }
  int run() { return ladder::scaling::run_fit(c); }
};

// ----- ladder coordcheck ------------------------------------------------------------------------

struct CoordcheckCommand {
  ladder::CoordcheckOptions options;
  void add(CLI::App& app) {
    auto* cmd = app.add_subcommand(
        "coordcheck",
        "Coordinate check: each layer type's mean |output| over a few steps at several widths, "
        "with the log-log slope against width (muP: about 0)");
    cmd->add_option("recipe", options.recipe, "Recipe file (recipes/README.md)")->required();
    cmd->add_option("--widths", options.widths, "d_model values, comma-separated")
        ->delimiter(',')
        ->capture_default_str();
    cmd->add_option("--steps", options.steps, "Training steps at each width")
        ->capture_default_str();
    cmd->add_option("--seeds", options.seeds, "Seeds averaged at each width")
        ->capture_default_str();
    cmd->add_option("--out", options.out_dir,
                    "Folder for coords.csv, slopes.csv and coordcheck.png (default: "
                    "coordcheck/<recipe name>)");
    cmd->add_option("--set", options.overrides,
                    "Override a recipe key: --set section.key=value (repeatable)");
    cmd->add_option("--threads", options.threads, "LibTorch threads (default: every core)");
  }
  int run(const GlobalOptions& g, int* argc, char*** argv) {
    ladder::parallel::MpiWorld world(argc, argv);  // one process: the run context's mesh of one
    init_logging(g, 0);
    return ladder::run_coordcheck(options);
  }
};

// ----- ladder sweep -----------------------------------------------------------------------------

struct SweepCommand {
  std::string path;
  ladder::SweepOptions options;
  void add(CLI::App& app) {
    auto* cmd = app.add_subcommand(
        "sweep", "Run a sweep of recipes (grids, zips, derived values), resumably; or plan it");
    cmd->add_option("sweep", path, "Sweep file (recipes/sweeps/README.md)")->required();
    cmd->add_flag("--dry-run", options.dry_run,
                  "Print the plan (runs, N, D, FLOPs, estimated times) and stop");
    cmd->add_flag("--status", options.status,
                  "Print the plan with each run's status, write the index, run nothing");
    cmd->add_flag("--slurm", options.slurm,
                  "Write a Slurm job list and array script for the runs not done, run nothing");
    cmd->add_flag(
        "--no-estimate", [this](int64_t) { options.estimate = false; },
        "Do not measure a step per model shape for the plan's time estimates");
  }
  int run(const GlobalOptions& g, int* argc, char*** argv) {
    init_logging(g, 0);
    options.log_level = g.log_level;
    options.argc = argc, options.argv = argv;
    return ladder::run_sweep(path, options);
  }
};

}  // namespace

int main(int argc, char** argv) {
  ladder::keep_freed_cpu_memory();
  // Past a file-size limit (ulimit -f) a write fails with EFBIG and ends in a clear error (a
  // checkpoint that cannot be written, trainer/run/checkpoint.h) instead of killing the process.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"ladder: distributed transformer training for scaling-law research"};
  app.name("ladder");
  app.require_subcommand(1, 1);
  app.fallthrough();
  GlobalOptions global;
  app.add_option("--log-level", global.log_level, "trace | debug | info | warn | error | off")
      ->capture_default_str();
  app.add_flag("--log-all-ranks", global.log_all_ranks, "Log to the console from every rank");

  PrepCommand prep;
  prep.add(app);
  TrainCommand train;
  train.add(app);
  InspectCommand inspect;
  inspect.add(app);
  SampleCommand sample;
  sample.add(app);
  ExportCommand export_command;
  export_command.add(app);
  PlotCommand plot;
  plot.add(app);
  FitCommand fit;
  fit.add(app);
  SweepCommand sweep;
  sweep.add(app);
  CoordcheckCommand coordcheck;
  coordcheck.add(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string where = "ladder";
    for (const auto* sub : app.get_subcommands())
      where += " " + sub->get_name();
    std::fprintf(stderr, "ladder: error: %s: %s (see `%s --help`)\n", where.c_str(), e.what(),
                 where.c_str());
    return ladder::kExitUserError;
  }

  try {
    if (app.got_subcommand("prep")) return prep.run(global);
    if (app.got_subcommand("train")) return train.run(global, &argc, &argv);
    if (app.got_subcommand("inspect")) return inspect.run(global);
    if (app.got_subcommand("plot")) return plot.run(global);
    if (app.got_subcommand("sample")) return sample.run(global);
    if (app.got_subcommand("export")) return export_command.run(global);
    if (app.got_subcommand("fit")) return fit.run();
    if (app.got_subcommand("sweep")) return sweep.run(global, &argc, &argv);
    if (app.got_subcommand("coordcheck")) return coordcheck.run(global, &argc, &argv);
  } catch (const Error& e) {
    std::fprintf(stderr, "%s\n", ladder::format_error(e).c_str());
    return ladder::kExitUserError;
  }
  return 0;
}
