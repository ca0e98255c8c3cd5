using Optimum.Inference.Forecasting;

namespace Optimum.Models;

/// <summary>
/// HF's TimeSeriesTransformer and Informer (model_type time_series_transformer / informer): probabilistic
/// forecasters trained on windows of series files, served by sampling paths.
/// </summary>
public sealed class TimeSeriesKind : ModelKind<TimeSeriesConfig>
{
    public override IReadOnlyList<string> ModelTypes { get; } = ["time_series_transformer", "informer"];
    public override string TrainingData => "series files (.csv with series,month,value or vega's .json)";
    public override string ThroughputUnit => "windows/s";


    /// <summary>Writes config.json, training.onnx, eval.onnx, encoder.onnx and decoder.onnx (no weights).</summary>
    public override void Write(string dir, TimeSeriesConfig c)
    {
        var encoder = new GraphBuilder(c.ModelType + "_encoder");
        TimeSeriesModel.DefineEncoder(encoder, c);
        var decoder = new GraphBuilder(c.ModelType + "_decoder");
        TimeSeriesModel.DefineDecoder(decoder, c);
        Artifacts.Write(dir, c.ModelType, c.ToHf(), Define(c), [(ModelFolder.EncoderFile, "encoder", encoder), (ModelFolder.DecoderFile, "decoder", decoder)]);
    }

    public override Func<GraphBuilder, bool, ModelOutputs> Define(TimeSeriesConfig c) => (g, training) => TimeSeriesModel.Define(g, training, c);

    /// <summary>
    /// HF's _init_weights: Linear, Conv1d and Embedding weights ~ N(0, init_std), biases 0, LayerNorm and
    /// BatchNorm weight 1 / bias 0, running mean 0 / variance 1, sinusoidal position tables (sin in the
    /// first half of each row, cos in the second). Deterministic in the seed and the parameter order.
    /// </summary>
    public override float[][] Initialize(IReadOnlyList<ParameterInfo> ps, TimeSeriesConfig c, int seed)
    {
        var rng = new Random(seed);
        return ps.Select(p =>
        {
            string n = p.Name;
            if (n.EndsWith("embed_positions.weight", StringComparison.Ordinal)) return Sinusoidal((int)p.Shape[0], (int)p.Shape[1]);
            if (n.EndsWith("running_var", StringComparison.Ordinal)) return Enumerable.Repeat(1f, (int)p.Count).ToArray();
            if (n.EndsWith("running_mean", StringComparison.Ordinal) || n.EndsWith(".bias", StringComparison.Ordinal)) return new float[p.Count];
            if (n.Contains("layernorm", StringComparison.Ordinal) || n.Contains("layer_norm", StringComparison.Ordinal) || n.Contains(".norm.", StringComparison.Ordinal))
                return Enumerable.Repeat(1f, (int)p.Count).ToArray();
            return HfWeights.Normal(rng, p.Count, c.InitStd);
        }).ToArray();
    }

    /// <summary>The sinusoidal table of HF's TimeSeriesSinusoidalPositionalEmbedding (float64 angles, as numpy computes them).</summary>
    public static float[] Sinusoidal(int positions, int dim)
    {
        var t = new float[positions * dim];
        int sentinel = dim % 2 == 0 ? dim / 2 : dim / 2 + 1;
        for (int pos = 0; pos < positions; pos++)
            for (int j = 0; j < dim; j++)
            {
                double angle = pos / Math.Pow(10000, 2 * (j / 2) / (double)dim);
                if (j % 2 == 0) t[pos * dim + j / 2] = (float)Math.Sin(angle);
                else t[pos * dim + sentinel + j / 2] = (float)Math.Cos(angle);
            }
        return t;
    }

    /// <summary>
    /// Windows sampled across series and time from .csv/.json series files (monthly: time features month of year
    /// and age; the series index as the first static categorical feature when the model has one).
    /// </summary>
    public override IBatchSource OpenTrainingData(DataOptions o, TimeSeriesConfig c, Action<string> say)
    {
        var source = Path.Combine(o.ModelDir, ModelFolder.ConfigFile);
        if (c.TimeFeatures != "monthly")
            throw new InvalidDataException($"{source}: training from series files derives monthly time features; set \"time_features\": \"monthly\" (with num_time_features 2) in the model's config.");
        var series = o.Files.SelectMany(TimeSeriesFiles.Read).ToArray();
        if (series.GroupBy(s => s.Name).FirstOrDefault(g => g.Count() > 1) is { } dup)
            throw new InvalidDataException($"Series '{dup.Key}' appears in more than one place in {string.Join(", ", o.Files)}; series names identify them.");
        if (c.DistributionOutput == "negative_binomial" && series.FirstOrDefault(s => s.Values.Any(v => v < 0)) is { } negative)
            throw new InvalidDataException($"Series '{negative.Name}' has negative values; a negative-binomial model forecasts counts (>= 0).");
        if (c.DistributionOutput == "negative_binomial" && series.FirstOrDefault(s => s.Values.Any(v => float.IsFinite(v) && v != MathF.Round(v))) is { } fractional)
            say($"warning: series '{fractional.Name}' has non-integer values; a negative-binomial model treats them as counts");
        if (c.IsInformer && c.Distil && c.EncoderLayerdrop > 0)
            say($"note: encoder_layerdrop {c.EncoderLayerdrop} with distilling: a dropped layer's distilling conv still runs here (static shapes); transformers skips it too");
        bool ids = c.NumStaticCategoricalFeatures > 0;
        if (c.NumStaticCategoricalFeatures > 1 || c.NumStaticRealFeatures > 0)
            throw new InvalidDataException($"{source}: series files carry no static features beyond the series index; the model wants {c.NumStaticCategoricalFeatures} categorical and {c.NumStaticRealFeatures} real ones.");
        if (ids && c.Cardinality[0] < series.Length)
            throw new InvalidDataException($"{source}: cardinality {c.Cardinality[0]} of the series-index feature is smaller than the {series.Length} series in {string.Join(", ", o.Files)}.");
        int holdout = o.Holdout ?? c.PredictionLength;
        var data = new TimeSeriesWindows(series, c.ContextLength, c.PredictionLength, c.LagsSequence, holdout, minPast: c.ContextLength, seriesIdAsCategorical: ids);
        say($"data: {series.Length} series, {data.TrainSamples:N0} training windows (context {c.ContextLength} + lags to {c.MaxLag}, horizon {c.PredictionLength}) whose futures end {holdout} points before each series end; {data.ValidationSamples} validation windows forecast the last {c.PredictionLength} points");
        return data;
    }

    /// <summary>The series index is the model's categorical feature: the names go to series.json so forecasts find their ids.</summary>
    public override void SaveDataFiles(IBatchSource data, string dir)
    {
        if (data is TimeSeriesWindows windows) SeriesIds.Save(dir, windows.Series.Select(s => s.Name).ToArray());
    }

    public override LoadedModel Load(string dir, SessionSettings? settings = null) => new(dir, new Forecaster(dir, settings: settings));
}
