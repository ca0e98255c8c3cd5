using Optimum.Distributed;
using Optimum.Training;
using Spectre.Console;

namespace Optimum.Cli;

/// <summary>
/// <c>optimum-net train</c>: a <see cref="TrainingJob"/> (any model kind) with a live progress bar on a terminal,
/// or periodic lines when the output is not one.
/// </summary>
public static class TrainCommand
{
    /// <summary>Trains on <paramref name="ranks"/> in-process ranks (threads), ZeRO-1 when more than one; returns rank 0's result.</summary>
    public static TrainResult RunInProcess(TrainingJobOptions o, int ranks, CancellationToken cancel = default) =>
        RunFolder.Unwrapped(() => InProcessWorld.RunRanks(ranks, c => Run(o, cancel, c)));

    /// <summary>One rank of a run (the only one without <paramref name="comm"/>); rank 0 reports.</summary>
    public static TrainResult Run(TrainingJobOptions o, CancellationToken cancel = default, ICommunicator? comm = null)
    {
        using var job = TrainingJob.Open(o, comm, s => AnsiConsole.MarkupLineInterpolated($"[grey]{s}[/]"));
        if (comm is { Rank: > 0 }) return job.Run(cancel);
        var trainer = job.Trainer;
        if (!AnsiConsole.Profile.Capabilities.Interactive)
        {
            job.WriteProgressTo(Console.Out);
            return job.Run(cancel);
        }
        trainer.Evaluated += e => AnsiConsole.MarkupLineInterpolated($"step {e.Step,6}  [green]val_loss {e.ValidationLoss:F4}[/]");
        TrainResult result = null!;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask("training", maxValue: o.Trainer.Steps);
                trainer.StepCompleted += m =>
                {
                    task.Value = m.Step;
                    task.Description = $"step {m.Step}/{m.TotalSteps}  loss {m.Loss:F4}  {m.TokensPerSecond:N0} {job.ThroughputUnit}";
                };
                result = job.Run(cancel);
            });
        return result;
    }
}
