using System.Text.Json;
using System.Text.Json.Nodes;

namespace Optimum.Core.Diffusion;

/// <summary>
/// diffusers' <c>scheduler_config.json</c> (DDPMScheduler / DDIMScheduler) with diffusers' names and DDPMScheduler's
/// defaults: how a UNet was trained to be noised, and how DDIM and DDPM sampling step through it. Values the samplers
/// do not implement (other prediction types, spacings, variance types, thresholding, trained betas) are refused
/// naming the key; unknown keys are kept so a saved file carries them back.
/// </summary>
public sealed record SchedulerConfig
{
    public const string FileName = "scheduler_config.json";
    /// <summary>A diffusers pipeline keeps the scheduler in a sibling folder: <c>unet/</c> beside <c>scheduler/</c>.</summary>
    public const string PipelineFolder = "scheduler";
    public const string DdpmClassName = "DDPMScheduler";
    public const string DdimClassName = "DDIMScheduler";

    /// <summary>The scheduler class that wrote the file; either sampler reads the noise schedule it describes.</summary>
    public string ClassName { get; init; } = DdpmClassName;
    public int NumTrainTimesteps { get; init; } = 1000;
    public double BetaStart { get; init; } = 1e-4;
    public double BetaEnd { get; init; } = 0.02;
    /// <summary>"linear", "scaled_linear" or "squaredcos_cap_v2" (which ignores beta_start and beta_end).</summary>
    public string BetaSchedule { get; init; } = "linear";
    /// <summary>Only "epsilon": the UNet predicts the noise.</summary>
    public string PredictionType { get; init; } = "epsilon";
    /// <summary>Clamp the predicted x₀ to [−clip_sample_range, clip_sample_range] at every step.</summary>
    public bool ClipSample { get; init; } = true;
    public double ClipSampleRange { get; init; } = 1.0;
    /// <summary>DDIM: ᾱ after the last step is 1 (else ᾱ_0).</summary>
    public bool SetAlphaToOne { get; init; } = true;
    /// <summary>Added to every "leading" timestep (Stable Diffusion uses 1: 901, 801, …, 1).</summary>
    public int StepsOffset { get; init; }
    /// <summary>Only "leading": steps k·(T / steps) + steps_offset, k = steps − 1 … 0.</summary>
    public string TimestepSpacing { get; init; } = "leading";
    /// <summary>DDPM: only "fixed_small" (the posterior variance β̃_t).</summary>
    public string VarianceType { get; init; } = "fixed_small";
    /// <summary>The document it was read from (unknown keys are written back by <see cref="ToJson"/>).</summary>
    public JsonObject? Source { get; init; }

    /// <summary>
    /// <paramref name="modelDir"/>/scheduler_config.json, or DDPMScheduler's defaults (linear 1e-4..0.02 over 1,000
    /// steps, clip_sample) when the folder has none.
    /// </summary>
    public static SchedulerConfig Load(string modelDir)
    {
        var path = Path.Combine(modelDir, FileName);
        return File.Exists(path) ? FromJson(HfConfig.Load(path)) : new SchedulerConfig();
    }

    /// <summary>A parsed scheduler_config.json; unsupported values are refused naming the file and the key.</summary>
    public static SchedulerConfig FromJson(HfConfig c)
    {
        var cfg = new SchedulerConfig
        {
            ClassName = c.String("_class_name", DdpmClassName), NumTrainTimesteps = c.Int("num_train_timesteps", 1000),
            BetaStart = c.Double("beta_start", 1e-4), BetaEnd = c.Double("beta_end", 0.02), BetaSchedule = c.String("beta_schedule", "linear"),
            PredictionType = c.String("prediction_type", "epsilon"), ClipSample = c.Bool("clip_sample", true),
            ClipSampleRange = c.Double("clip_sample_range", 1.0), SetAlphaToOne = c.Bool("set_alpha_to_one", true),
            StepsOffset = c.Int("steps_offset", 0), TimestepSpacing = c.String("timestep_spacing", "leading"),
            VarianceType = c.String("variance_type", "fixed_small"), Source = c.Json,
        };
        void Refuse(string key, JsonNode? allowed)
        {
            if (c.Json[key] is { } v && !JsonNode.DeepEquals(v, allowed))
                throw new InvalidDataException($"{c.Source}: {key}={v.ToJsonString()} is not supported; expected {allowed?.ToJsonString() ?? "null"}.");
        }
        Refuse("trained_betas", null);
        Refuse("thresholding", false);
        Refuse("rescale_betas_zero_snr", false);
        cfg.Validate(c.Source);
        return cfg;
    }

    /// <summary>Checks every value the samplers read; the message names the source, the key, the value and what is supported.</summary>
    public void Validate(string source = FileName)
    {
        void Check(bool ok, string key, object value, string expected)
        {
            if (!ok) throw new InvalidDataException($"{source}: {key}={value} is not supported; expected {expected}.");
        }
        Check(NumTrainTimesteps >= 2, "num_train_timesteps", NumTrainTimesteps, "at least 2");
        Check(BetaSchedule is "linear" or "scaled_linear" or "squaredcos_cap_v2", "beta_schedule", $"\"{BetaSchedule}\"", "\"linear\", \"scaled_linear\" or \"squaredcos_cap_v2\"");
        if (BetaSchedule != "squaredcos_cap_v2")
            Check(BetaStart > 0 && BetaStart <= BetaEnd && BetaEnd < 1, "beta_start/beta_end", $"{BetaStart}/{BetaEnd}", "0 < beta_start <= beta_end < 1");
        Check(PredictionType == "epsilon", "prediction_type", $"\"{PredictionType}\"", "\"epsilon\" (the UNet predicts the noise)");
        Check(TimestepSpacing == "leading", "timestep_spacing", $"\"{TimestepSpacing}\"", "\"leading\"");
        Check(VarianceType == "fixed_small", "variance_type", $"\"{VarianceType}\"", "\"fixed_small\"");
        Check(ClipSampleRange > 0 && double.IsFinite(ClipSampleRange), "clip_sample_range", ClipSampleRange, "a positive number");
        Check(StepsOffset >= 0 && StepsOffset < NumTrainTimesteps, "steps_offset", StepsOffset, $"in [0, {NumTrainTimesteps})");
    }

    /// <summary>The noise schedule these values describe (betas and ᾱ in float32, as diffusers computes them).</summary>
    public NoiseSchedule Build() => BetaSchedule switch
    {
        "linear" => NoiseSchedule.Linear(NumTrainTimesteps, BetaStart, BetaEnd),
        "scaled_linear" => NoiseSchedule.ScaledLinear(NumTrainTimesteps, BetaStart, BetaEnd),
        "squaredcos_cap_v2" => NoiseSchedule.SquaredCosCapV2(NumTrainTimesteps),
        _ => throw new InvalidDataException($"{FileName}: beta_schedule=\"{BetaSchedule}\" is not supported; expected \"linear\", \"scaled_linear\" or \"squaredcos_cap_v2\"."),
    };

    /// <summary>
    /// The scheduler_config.json document: the source's unknown keys, then every key above. DDIM's set_alpha_to_one is
    /// left out of a DDPMScheduler file (and DDPM's variance_type out of a DDIMScheduler one) when it has its default,
    /// so diffusers does not warn about keys its class does not take.
    /// </summary>
    public JsonObject ToJson()
    {
        Validate();
        var o = Source?.DeepClone().AsObject() ?? new JsonObject();
        o["_class_name"] = ClassName;
        o["num_train_timesteps"] = NumTrainTimesteps;
        o["beta_start"] = BetaStart;
        o["beta_end"] = BetaEnd;
        o["beta_schedule"] = BetaSchedule;
        o["prediction_type"] = PredictionType;
        o["clip_sample"] = ClipSample;
        o["clip_sample_range"] = ClipSampleRange;
        o["timestep_spacing"] = TimestepSpacing;
        o["steps_offset"] = StepsOffset;
        if (ClassName != DdpmClassName || !SetAlphaToOne || o.ContainsKey("set_alpha_to_one")) o["set_alpha_to_one"] = SetAlphaToOne;
        if (ClassName != DdimClassName || o.ContainsKey("variance_type")) o["variance_type"] = VarianceType;
        return o;
    }

    /// <summary>Writes <paramref name="dir"/>/scheduler_config.json atomically.</summary>
    public void Save(string dir) =>
        AtomicFile.Write(Path.Combine(dir, FileName), System.Text.Encoding.UTF8.GetBytes(ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n"));
}
