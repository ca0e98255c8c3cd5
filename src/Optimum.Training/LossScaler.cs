using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Optimum.Core;

namespace Optimum.Training;

/// <summary>Dynamic loss scaling's settings: torch.amp.GradScaler's names and defaults.</summary>
public sealed record LossScalerOptions
{
    public double InitScale { get; init; } = 65536;
    public double GrowthFactor { get; init; } = 2;
    public double BackoffFactor { get; init; } = 0.5;
    /// <summary>Consecutive steps without inf/NaN gradients after which the scale grows.</summary>
    public int GrowthInterval { get; init; } = 2000;

    public void Validate()
    {
        if (!(InitScale > 0 && double.IsFinite(InitScale))) throw new ArgumentException($"{nameof(InitScale)} must be a positive number, got {InitScale}.");
        if (!(GrowthFactor > 1 && double.IsFinite(GrowthFactor))) throw new ArgumentException($"{nameof(GrowthFactor)} must be > 1, got {GrowthFactor}.");
        if (!(BackoffFactor > 0 && BackoffFactor < 1)) throw new ArgumentException($"{nameof(BackoffFactor)} must be in (0, 1), got {BackoffFactor}.");
        if (GrowthInterval < 1) throw new ArgumentException($"{nameof(GrowthInterval)} must be at least 1, got {GrowthInterval}.");
    }
}

/// <summary>
/// fp16 training's dynamic loss scaling, as torch.amp.GradScaler does it: the loss is multiplied by <see cref="Scale"/> before the
/// backward pass; the trainer divides the gradients by it and, when any is inf or NaN (their norm, summed over every rank, is
/// not finite), skips the step; <see cref="Update"/> then multiplies the scale by the backoff factor, while <see cref="LossScalerOptions.GrowthInterval"/>
/// good steps in a row multiply it by the growth factor. The scale is float32, as torch keeps it. Its state (scale and the
/// good-step count) goes into checkpoints (<see cref="Save"/>, <see cref="Load"/>) so that a resumed run scales as the
/// uninterrupted one would.
/// </summary>
public sealed class LossScaler
{
    /// <summary>The file a checkpoint keeps the state in.</summary>
    public const string FileName = "loss_scaler.json";

    /// <param name="options">The settings (torch's defaults when null).</param>
    public LossScaler(LossScalerOptions? options = null)
    {
        Options = options ?? new();
        Options.Validate();
        Scale = (float)Options.InitScale;
    }

    public LossScalerOptions Options { get; }
    /// <summary>What the loss is multiplied by.</summary>
    public float Scale { get; private set; }
    /// <summary>Good steps since the scale last changed (torch's _growth_tracker).</summary>
    public int GrowthTracker { get; private set; }
    /// <summary>Steps skipped for inf/NaN gradients so far.</summary>
    public long Skipped { get; private set; }

    /// <summary>After a step: lowers the scale when <paramref name="foundInf"/> (the step was skipped), else counts a good step and grows the scale every GrowthInterval of them.</summary>
    public void Update(bool foundInf)
    {
        if (foundInf)
        {
            Scale = (float)(Scale * Options.BackoffFactor);
            GrowthTracker = 0;
            Skipped++;
            return;
        }
        if (++GrowthTracker == Options.GrowthInterval)
        {
            // torch: a grown scale that overflows float32 is not taken.
            var grown = (float)(Scale * Options.GrowthFactor);
            if (float.IsFinite(grown)) Scale = grown;
            GrowthTracker = 0;
        }
    }

    /// <summary>Writes the state to <paramref name="dir"/>/<see cref="FileName"/> (through a temp file and a rename).</summary>
    public void Save(string dir)
    {
        var json = new JsonObject
        {
            // The float32 scale's exact value: "R" of a float round-trips.
            ["scale"] = Scale.ToString("R", CultureInfo.InvariantCulture),
            ["growth_tracker"] = GrowthTracker,
            ["skipped"] = Skipped,
            ["growth_factor"] = Options.GrowthFactor,
            ["backoff_factor"] = Options.BackoffFactor,
            ["growth_interval"] = Options.GrowthInterval,
        };
        AtomicFile.Write(Path.Combine(dir, FileName), Encoding.UTF8.GetBytes(json.ToJsonString(new JsonSerializerOptions { WriteIndented = true })));
    }

    /// <summary>Restores the state saved in <paramref name="dir"/>; the file must exist and hold what <see cref="Save"/> writes. Nothing changes when it is refused.</summary>
    public void Load(string dir)
    {
        var path = Path.Combine(dir, FileName);
        if (!File.Exists(path)) throw new FileNotFoundException($"Checkpoint '{dir}' has no {FileName}: it was not saved by an fp16 run with loss scaling.", path);
        JsonNode? root;
        try { root = JsonNode.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new InvalidDataException($"'{path}' is not JSON: {e.Message}", e); }
        T Field<T>(string name)
        {
            var node = root?[name] ?? throw new InvalidDataException($"'{path}' has no \"{name}\".");
            try { return node.GetValue<T>(); }
            catch (Exception e) when (e is InvalidOperationException or FormatException)
            {
                throw new InvalidDataException($"'{path}': \"{name}\" is {node.ToJsonString()}, not a {typeof(T).Name}.", e);
            }
        }
        var text = Field<string>("scale");
        if (!float.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var scale))
            throw new InvalidDataException($"'{path}': \"scale\" is '{text}', not a number.");
        var tracker = Field<int>("growth_tracker");
        var skipped = Field<long>("skipped");
        if (!(scale > 0 && float.IsFinite(scale)) || tracker < 0 || tracker >= Options.GrowthInterval || skipped < 0)
            throw new InvalidDataException($"'{path}': scale {scale}, growth_tracker {tracker} (growth interval {Options.GrowthInterval}) or skipped {skipped} is out of range.");
        (Scale, GrowthTracker, Skipped) = (scale, tracker, skipped);
    }
}
