using Optimum.Distributed;
using Optimum.Hub;
using Optimum.Models;
using Optimum.Training;
using Optimum.Data;
using Spectre.Console;
using Optimum.Core;

namespace Optimum.Cli;

/// <summary>Options of <c>optimum-net train</c> beyond the trainer's own.</summary>
/// <param name="Trainer">The trainer's options.</param>
/// <param name="Data">Text files (GPT-2), pair files (T5) or series files (time-series models).</param>
/// <param name="SeqLen">Tokens per GPT-2 window.</param>
/// <param name="ValidationFraction">Share of the text or pairs held out for validation.</param>
/// <param name="CacheDir">Where token caches go.</param>
/// <param name="Holdout">Time series: points at the end of each series kept out of training windows (default: prediction_length; the validation windows forecast the last prediction_length of them).</param>
public sealed record TrainCommandOptions(TrainerOptions Trainer, IReadOnlyList<string> Data, int SeqLen, double ValidationFraction = 0.05, string? CacheDir = null, int? Holdout = null);

/// <summary>
/// <c>optimum-net train</c>: data (text for GPT-2, pairs for T5) → batches → <see cref="Trainer"/> with a live progress bar (or
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

    private static IBatchSource TextData(TrainCommandOptions o, HfConfig cfg, Action<string> say)
    {
        var gpt = Gpt2Config.FromHf(cfg);
        if (o.SeqLen > gpt.NPositions) throw new ArgumentException($"--seq-len {o.SeqLen} exceeds the model's n_positions {gpt.NPositions}.");
        if (gpt.VocabSize < Gpt2Tokenizer.EndOfText + 1) throw new ArgumentException($"The model's vocab_size {gpt.VocabSize} is smaller than GPT-2's BPE vocabulary ({Gpt2Tokenizer.EndOfText + 1}).");
        var corpus = TokenCorpus.Load(o.Data, o.CacheDir, say);
        var data = new LmData(corpus.Tokens, o.SeqLen, o.ValidationFraction);
        say($"data: {data.TrainSamples:N0} training and {data.ValidationSamples:N0} validation windows of {o.SeqLen} tokens");
        return data;
    }

    /// <summary>T5 trains on (source, target) pairs from TSV or JSONL files, tokenized with the model folder's vocab.json.</summary>
    private static IBatchSource PairData(TrainCommandOptions o, HfConfig cfg, Action<string> say)
    {
        var t5 = T5Config.FromHf(cfg);
        var tok = PairTokenizers.Load(o.Trainer.ModelDir);
        if (tok.VocabSize > t5.VocabSize) throw new InvalidDataException($"The tokenizer of {o.Trainer.ModelDir} has {tok.VocabSize} tokens but the model's vocab_size is {t5.VocabSize}.");
        var pairs = o.Data.SelectMany(Seq2SeqData.ReadPairs).ToArray();
        var encoded = pairs.Select(p => (tok.EncodeSource(p.Source), tok.EncodeTarget(p.Target))).ToArray();
        int longest = encoded.Max(p => Math.Max(p.Item1.Length, p.Item2.Length));
        if (longest > t5.MaxLength) throw new InvalidDataException($"A pair encodes to {longest} tokens, more than the model's n_positions {t5.MaxLength}.");
        var data = new Seq2SeqData(encoded, o.ValidationFraction, t5.PadTokenId);
        say($"data: {data.TrainSamples:N0} training and {data.ValidationSamples:N0} validation pairs from {o.Data.Count} file(s)");
        return data;
    }

    /// <summary>
    /// TimeSeriesTransformer / Informer train on windows sampled across series and time from .csv/.json series
    /// files (monthly; time features month of year and age; the series index as the first static categorical
    /// feature when the model has one).
    /// </summary>
    private static IBatchSource SeriesData(TrainCommandOptions o, HfConfig cfg, Action<string> say)
    {
        var c = TimeSeriesConfig.FromHf(cfg);
        if (c.TimeFeatures != "monthly")
            throw new InvalidDataException($"{cfg.Source}: training from series files derives monthly time features; set \"time_features\": \"monthly\" (with num_time_features 2) in the model's config.");
        var series = o.Data.SelectMany(TimeSeriesFiles.Read).ToArray();
        if (series.GroupBy(s => s.Name).FirstOrDefault(g => g.Count() > 1) is { } dup)
            throw new InvalidDataException($"Series '{dup.Key}' appears in more than one place in {string.Join(", ", o.Data)}; series names identify them.");
        if (c.DistributionOutput == "negative_binomial" && series.FirstOrDefault(s => s.Values.Any(v => v < 0)) is { } negative)
            throw new InvalidDataException($"Series '{negative.Name}' has negative values; a negative-binomial model forecasts counts (>= 0).");
        if (c.DistributionOutput == "negative_binomial" && series.FirstOrDefault(s => s.Values.Any(v => float.IsFinite(v) && v != MathF.Round(v))) is { } fractional)
            say($"warning: series '{fractional.Name}' has non-integer values; a negative-binomial model treats them as counts");
        if (c.IsInformer && c.Distil && c.EncoderLayerdrop > 0)
            say($"note: encoder_layerdrop {c.EncoderLayerdrop} with distilling: a dropped layer's distilling conv still runs here (static shapes); transformers skips it too");
        bool ids = c.NumStaticCategoricalFeatures > 0;
        if (c.NumStaticCategoricalFeatures > 1 || c.NumStaticRealFeatures > 0)
            throw new InvalidDataException($"{cfg.Source}: series files carry no static features beyond the series index; the model wants {c.NumStaticCategoricalFeatures} categorical and {c.NumStaticRealFeatures} real ones.");
        if (ids && c.Cardinality[0] < series.Length)
            throw new InvalidDataException($"{cfg.Source}: cardinality {c.Cardinality[0]} of the series-index feature is smaller than the {series.Length} series in {string.Join(", ", o.Data)}.");
        int holdout = o.Holdout ?? c.PredictionLength;
        var data = new TimeSeriesWindows(series, c.ContextLength, c.PredictionLength, c.LagsSequence, holdout, minPast: c.ContextLength, seriesIdAsCategorical: ids);
        say($"data: {series.Length} series, {data.TrainSamples:N0} training windows (context {c.ContextLength} + lags to {c.MaxLag}, horizon {c.PredictionLength}) whose futures end {holdout} points before each series end; {data.ValidationSamples} validation windows forecast the last {c.PredictionLength} points");
        return data;
    }

    /// <summary>One rank of a run (the only one without <paramref name="comm"/>); rank 0 reports.</summary>
    public static TrainResult Run(TrainCommandOptions o, CancellationToken cancel = default, ICommunicator? comm = null)
    {
        comm ??= new SingleProcess();
        bool lead = comm.Rank == 0;
        var t = o.Trainer;
        var cfg = ModelFolder.ReadConfig(t.ModelDir);
        void Say(string s) { if (lead) AnsiConsole.MarkupLineInterpolated($"[grey]{s}[/]"); }
        IBatchSource data = cfg.ModelType switch
        {
            "gpt2" => TextData(o, cfg, Say),
            "t5" => PairData(o, cfg, Say),
            "time_series_transformer" or "informer" => SeriesData(o, cfg, Say),
            var k => throw new InvalidDataException($"{cfg.Source}: training model_type '{k}' is not supported (gpt2 on text files, t5 on pairs, time-series models on series files)."),
        };
        // Time-series batches count windows, not tokens.
        string unit = data is TimeSeriesWindows ? "windows/s" : "tok/s";
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
                        task.Description = $"step {m.Step}/{m.TotalSteps}  loss {m.Loss:F4}  {m.TokensPerSecond:N0} {unit}";
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
                    Console.WriteLine($"step {m.Step,6}/{m.TotalSteps}  loss {m.Loss:F4}  lr {m.Lr:E2}  grad_norm {m.GradNorm:F3}  {m.TokensPerSecond,8:N0} {unit}{comm}  eta {eta:hh\\:mm\\:ss}");
                }
            };
            result = trainer.Run(cancel);
        }
        if (data is TimeSeriesWindows windows)
        {
            // The series index is the model's categorical feature: keep the names so forecasts find their ids.
            foreach (var dir in new[] { t.OutputDir, Path.Combine(t.OutputDir, "final") }.Where(Directory.Exists))
                SeriesIds.Save(dir, windows.Series.Select(s => s.Name).ToArray());
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
