using System.Text.Json;
using Optimum.Core;
using Optimum.Hub;

namespace Optimum.Training;

// Checkpoints, resume checks and the final export of a run.
public sealed partial class Trainer
{
    private long _lastSaved = -1;

    private string Save(long step, long skipped)
    {
        _lastSaved = step;
        var state = new TrainerState
        {
            Step = step, SamplesSeen = step * SamplesPerStep, SkippedSteps = skipped, Seed = _o.Seed, TotalSteps = _o.Steps,
            BatchSize = _o.BatchSize, GradAccum = _o.GradAccum, Optimizer = EnumNames.Name(_o.Optimizer.Kind), Schedule = EnumNames.Name(_o.Schedule), Lr = _o.Lr, Warmup = _o.Warmup,
            WorldSize = _comm.Size, GlobalBatch = SamplesPerStep, Ema = _o.Ema, Frozen = Frozen, FrozenSha256 = _frozenSha256,
            Precision = EnumNames.Name(_o.Precision),
        };
        _device?.Download();
        var dir = Checkpoints.Save(CheckpointRoot, _store, _opt, state, _o.KeepCheckpoints, _comm, _ema, _scaler);
        if (Lead) Log?.Invoke($"checkpoint {dir}");
        return dir;
    }

    /// <summary>The step of one metrics.jsonl line, or null when it is not a JSON object with an integer step.</summary>
    private static long? MetricsStep(string line)
    {
        try
        {
            using var doc = JsonDocument.Parse(line);
            return doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("step", out var s)
                && s.ValueKind == JsonValueKind.Number && s.TryGetInt64(out var step) ? step : null;
        }
        catch (JsonException) { return null; }
    }

    private void CheckCompatible(TrainerState s, string dir)
    {
        var state = Path.Combine(dir, Checkpoints.StateFile);
        void Same<T>(string what, T saved, T now)
        {
            if (!EqualityComparer<T>.Default.Equals(saved, now))
                throw new InvalidDataException($"Checkpoint '{state}' was made with {what} {saved}; this run has {now}. Resuming needs the same value.");
        }
        Same("seed", s.Seed, _o.Seed);
        // The data position depends on the global batch only, so a run may resume on another number of ranks.
        Same("global batch (batch size x grad accum x ranks)", s.GlobalBatch, SamplesPerStep);
        Same("total_steps", s.TotalSteps, _o.Steps);
        Same("optimizer", s.Optimizer, EnumNames.Name(_o.Optimizer.Kind));
        Same("EMA settings (ema)", s.Ema?.ToString() ?? "none", _o.Ema?.ToString() ?? "none");
        // fp32, tf32 and bf16 keep the same state; fp16 adds the loss scaler's, so only a change to or from fp16 is refused.
        if ((s.Precision == "fp16") != (_o.Precision == TrainingPrecision.Fp16)) Same("precision", s.Precision, EnumNames.Name(_o.Precision));
        Same("frozen parameters (frozen)", s.Frozen.Count == 0 ? "none" : string.Join(", ", s.Frozen), Frozen.Count == 0 ? "none" : string.Join(", ", Frozen));
        if (s.Step > _o.Steps) throw new InvalidDataException($"Checkpoint '{state}' is at step {s.Step}, past the run's {_o.Steps} steps.");
    }

    /// <summary>final/: the model folder with the trained weights (graphs copied); hf/: config.json + model.safetensors for transformers.</summary>
    private void ExportFinal()
    {
        var final = Path.Combine(_o.OutputDir, "final");
        // The kind (when the registry has one) adds its files to hf/ (a UNet's scheduler_config.json); resolved before anything is written.
        var config = ModelFolder.ReadConfig(_o.ModelDir);
        var kind = Optimum.Models.ModelKinds.All.FirstOrDefault(k => k.ModelTypes.Contains(config.ModelType ?? ""));
        Directory.CreateDirectory(final);
        // Everything of the model folder (graphs, config, tokenizer files) but its old weights.
        foreach (var src in Directory.GetFiles(_o.ModelDir).Where(f => Path.GetFileName(f) != ModelFolder.WeightsFile && !Path.GetFileName(f).StartsWith('.')))
            Optimum.Core.AtomicFile.Write(Path.Combine(final, Path.GetFileName(src)), File.ReadAllBytes(src));
        // Streamed from the flat buffers: no copy of the weights is held while writing.
        Func<int, ReadOnlySpan<float>> weights = _ema is { } ema ? ema.Values : i => _store.Param(i);
        HfWeights.Save(Path.Combine(final, ModelFolder.WeightsFile), _store.Parameters, weights);
        HfWeights.SaveFolder(Path.Combine(_o.OutputDir, "hf"), config.Json, _store.Parameters, weights);
        kind?.ExportFiles(_o.ModelDir, Path.Combine(_o.OutputDir, "hf"));
        Log?.Invoke($"exported {final} and {Path.Combine(_o.OutputDir, "hf")}" + (_ema is null ? "" : " with the EMA weights (the last checkpoint's model.safetensors has the raw ones)"));
    }
}
