using Optimum.Distributed;
using Optimum.Hub;
using Optimum.Models;
using Optimum.Training;
using Optimum.Training.Data;
using Spectre.Console;

namespace Optimum.Cli;

/// <summary>Options of <c>optimum-net train</c> beyond the trainer's own.</summary>
public sealed record TrainCommandOptions(TrainerOptions Trainer, IReadOnlyList<string> Data, int SeqLen, double ValidationFraction = 0.05, string? CacheDir = null);

/// <summary>
/// <c>optimum-net train</c>: data → batches → <see cref="Trainer"/> with a live progress bar (or
/// periodic lines when the output is not a terminal), a JSONL metrics log, and a loss-curve PNG.
/// </summary>
public static class TrainCommand
{
    /// <summary>Trains on <paramref name="ranks"/> in-process ranks (threads), ZeRO-1 when more than one; returns rank 0's result.</summary>
    public static TrainResult RunInProcess(TrainCommandOptions o, int ranks, CancellationToken cancel = default)
    {
        if (ranks == 1) return Run(o, cancel);
        var world = new InProcessWorld(ranks);
        try { return world.Run(c => Run(o, cancel, c))[0]; }
        catch (AggregateException e) { throw new InvalidOperationException(e.Message, e.InnerException); }
    }

    /// <summary>One rank of a run (the only one without <paramref name="comm"/>); rank 0 reports.</summary>
    public static TrainResult Run(TrainCommandOptions o, CancellationToken cancel = default, ICommunicator? comm = null)
    {
        comm ??= new SingleProcess();
        bool lead = comm.Rank == 0;
        var t = o.Trainer;
        var cfg = ModelFolder.ReadConfig(t.ModelDir);
        if (cfg.ModelType != "gpt2") throw new InvalidDataException($"{cfg.Source}: training model_type '{cfg.ModelType}' on text is not supported (gpt2 is).");
        var gpt = Gpt2Config.FromHf(cfg);
        if (o.SeqLen > gpt.NPositions) throw new ArgumentException($"--seq-len {o.SeqLen} exceeds the model's n_positions {gpt.NPositions}.");
        if (gpt.VocabSize < Gpt2Tokenizer.EndOfText + 1) throw new ArgumentException($"The model's vocab_size {gpt.VocabSize} is smaller than GPT-2's BPE vocabulary ({Gpt2Tokenizer.EndOfText + 1}).");
        void Say(string s) { if (lead) AnsiConsole.MarkupLineInterpolated($"[grey]{s}[/]"); }
        var corpus = TokenCorpus.Load(o.Data, o.CacheDir, Say);
        var data = new LmData(corpus.Tokens, o.SeqLen, o.ValidationFraction);
        Say($"data: {data.TrainSamples:N0} training and {data.ValidationSamples:N0} validation windows of {o.SeqLen} tokens");
        var weights = ModelInit.Load(t.ModelDir, t.Seed, Say);
        using var trainer = new Trainer(t, data, weights, comm);
        trainer.Log += Say;
        Say($"model: {trainer.Store.Parameters.Count} tensors, {trainer.Store.Parameters.Sum(p => p.Count):N0} parameters; optimizer state {trainer.Optimizer.StateBytes / 1e6:F1} MB per rank");
        if (comm.Size > 1) Say($"ZeRO-1 over {comm.Size} ranks ({comm.Backend}): global batch {t.BatchSize * t.GradAccum * comm.Size} sequences");
        if (!lead) return trainer.Run(cancel);
        trainer.Evaluated += e => AnsiConsole.MarkupLineInterpolated($"step {e.Step,6}  [green]val_loss {e.ValidationLoss:F4}[/]");
        TrainResult result;
        if (AnsiConsole.Profile.Capabilities.Interactive)
        {
            result = null!;
            AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask("training", maxValue: t.Steps);
                    trainer.StepCompleted += m =>
                    {
                        task.Value = m.Step;
                        task.Description = $"step {m.Step}/{m.TotalSteps}  loss {m.Loss:F4}  {m.TokensPerSecond:N0} tok/s";
                    };
                    result = trainer.Run(cancel);
                });
        }
        else
        {
            long every = Math.Max(1, t.Steps / 20);
            trainer.StepCompleted += m =>
            {
                if (m.Step % every == 0 || m.Step == m.TotalSteps || m.Step == 1)
                {
                    var eta = TimeSpan.FromSeconds(m.ElapsedSeconds / m.Step * (m.TotalSteps - m.Step));
                    var comm = m.CommSeconds > 0 ? $"  comm {m.CommSeconds / m.StepSeconds:P0}" : "";
                    Console.WriteLine($"step {m.Step,6}/{m.TotalSteps}  loss {m.Loss:F4}  lr {m.Lr:E2}  grad_norm {m.GradNorm:F3}  {m.TokensPerSecond,8:N0} tok/s{comm}  eta {eta:hh\\:mm\\:ss}");
                }
            };
            result = trainer.Run(cancel);
        }
        if (result.History.Count > 0)
        {
            var png = Path.Combine(t.OutputDir, "loss.png");
            Plot.TrainingCurve(result.History, result.Evals, png, $"{cfg.ModelType} on {string.Join(", ", o.Data.Select(Path.GetFileName))}");
            Say($"loss curve: {png}; metrics: {Path.Combine(t.OutputDir, "metrics.jsonl")}");
        }
        if (result.SkippedSteps > 0) AnsiConsole.MarkupLineInterpolated($"[yellow]{result.SkippedSteps} step(s) skipped for non-finite loss or gradients[/]");
        if (result.Interrupted) AnsiConsole.MarkupLineInterpolated($"[yellow]interrupted at step {result.Steps}; checkpoint {result.LastCheckpoint}; continue with --resume latest[/]");
        return result;
    }
}
