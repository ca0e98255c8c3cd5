namespace Optimum.Models;

/// <summary>
/// Hugging Face's TimeSeriesTransformerForPrediction and InformerForPrediction in the graph-builder DSL,
/// with HF's parameter names. The whole input pipeline is in the graph: the scaler over the observed
/// context (mean with the batch default, std, or none), lagged subsequences of the scaled target, static
/// categorical embeddings, static reals, log1p|loc| and log scale, time features; then a post-LN
/// encoder-decoder (Informer: ProbSparse self-attention with its sampled query selection and distilling
/// Conv1d(circular)-BatchNorm-ELU-MaxPool between encoder layers) and the distribution head (Student-T,
/// normal or negative binomial) whose negative log-likelihood is averaged with the observed-future mask.
/// Graphs: training/eval (batch → loss, distribution parameters, loc, scale, encoder output), the encoder
/// (once per forecast) and the decoder over a prefix of the prediction window (once per step, as HF's
/// generate runs it). Random choices (dropout, LayerDrop, ProbSparse key sampling) come from the
/// int64 input <c>dropout_seed</c> through a counter hash, so they are reproducible.
/// </summary>
public sealed partial class TimeSeriesModel : GraphModel<TimeSeriesConfig>
{
    /// <summary>Output name of the first distilling layer's BatchNorm input when <c>Define</c> is asked for it (tests).</summary>
    public const string DebugBatchNormInput = "debug.batch_norm_input";
    private bool _debugBatchNormInput;

    private readonly List<KeyValuePair<string, Value>> _updates = [];
    private Value? _seed;
    private long _salt;

    private TimeSeriesModel(GraphBuilder g, TimeSeriesConfig c, bool training, DType dtype) : base(g, c, dtype, training)
    {
        c.Validate();
        if (dtype is not (DType.Float or DType.Double)) throw new ArgumentException($"Time-series graphs are float or double, not {dtype.Name()}.", nameof(dtype));
        bool random = c.ProbAttention || (training && (c.Dropout > 0 || c.AttentionDropout > 0 || c.ActivationDropout > 0 || c.EncoderLayerdrop > 0 || c.DecoderLayerdrop > 0));
        if (random) _seed = g.Input(GraphInputs.DropoutSeed, DType.Int64, Shape.Scalar);
    }

    private sealed record PastInputs(Value Values, Value TimeFeatures, Value Observed, Value? Categorical, Value? Real);

    /// <summary>
    /// The training/eval definition. Inputs: past_values (batch, past_length), past_time_features
    /// (batch, past_length, T), past_observed_mask, [static_categorical_features (batch, C) int64],
    /// [static_real_features (batch, R)], future_values (batch, prediction_length), future_time_features,
    /// future_observed_mask. Outputs: loss, params.{i} (batch, prediction_length), loc, scale (batch, 1),
    /// encoder_last_hidden_state, static_features; in training also the BatchNorm running statistics.
    /// </summary>
    public static ModelOutputs Define(GraphBuilder g, bool training, TimeSeriesConfig c, DType dtype = DType.Float, bool debugBatchNormInput = false)
    {
        var m = new TimeSeriesModel(g, c, training, dtype) { _debugBatchNormInput = debugBatchNormInput };
        var past = m.Past();
        int h = c.PredictionLength, l = c.ContextLength;
        var futureValues = g.Input("future_values", m.dt, Shape.Of("batch", h));
        var futureTime = g.Input("future_time_features", m.dt, Shape.Of("batch", h, c.TimeFeatureCount));
        var futureObserved = g.Input("future_observed_mask", m.dt, Shape.Of("batch", h));
        var (x, loc, scale, stat) = m.NetworkInputs(past, futureValues, futureTime);
        var enc = m.Encoder(g.Slice(x, [0], [l], [1]));
        var dec = m.Decoder(g.Slice(x, [l], [l + h], [1]), enc);
        var ps = m.Parameters(dec);
        var nll = m.NegativeLogLikelihood(ps, loc, scale, futureValues);
        var weighted = g.Where(g.Equal(futureObserved, m.S(0)), m.S(0), nll * futureObserved);
        var loss = g.ReduceSum(g.Reshape(weighted, -1), [0], keepDims: false) / g.Max(g.ReduceSum(g.Reshape(futureObserved, -1), [0], keepDims: false), m.S(1));
        var outputs = ps.Select((p, i) => new KeyValuePair<string, Value>($"params.{i}", p)).ToList();
        outputs.Add(new("loc", loc));
        outputs.Add(new("scale", scale));
        outputs.Add(new("encoder_last_hidden_state", enc));
        outputs.Add(new("static_features", stat));
        return new ModelOutputs(loss, outputs, m._updates);
    }

    /// <summary>
    /// The forecasting encoder: the past inputs → encoder_last_hidden_state, loc, scale (batch, 1) and
    /// static_features (batch, S), which the decoder inputs are built from.
    /// </summary>
    public static void DefineEncoder(GraphBuilder g, TimeSeriesConfig c, DType dtype = DType.Float)
    {
        var m = new TimeSeriesModel(g, c, false, dtype);
        var (x, loc, scale, stat) = m.NetworkInputs(m.Past(), null, null);
        g.Output(m.Encoder(x), "encoder_last_hidden_state");
        g.Output(loc, "loc");
        g.Output(scale, "scale");
        g.Output(stat, "static_features");
    }

    /// <summary>
    /// One forecasting step: inputs_embeds (batch, seq, feature_size) for the first seq steps of the
    /// prediction window (lags of the scaled target, static features, time features) and
    /// encoder_last_hidden_state → params.{i} (batch) of the distribution of step seq.
    /// </summary>
    public static void DefineDecoder(GraphBuilder g, TimeSeriesConfig c, DType dtype = DType.Float)
    {
        var m = new TimeSeriesModel(g, c, false, dtype);
        var x = g.Input("inputs_embeds", m.dt, Shape.Of("batch", "seq", c.FeatureSize));
        var enc = g.Input("encoder_last_hidden_state", m.dt, Shape.Of("batch", c.EncoderOutputLength, c.DModel));
        var dec = m.Decoder(x, enc);
        var last = g.Slice(dec, [-1], [long.MaxValue], [1]);
        var ps = m.Parameters(last);
        for (int i = 0; i < ps.Count; i++) g.Output(g.Squeeze(ps[i], 1), $"params.{i}");
    }

    private PastInputs Past()
    {
        int p = c.PastLength;
        return new PastInputs(
            g.Input("past_values", dt, Shape.Of("batch", p)),
            g.Input("past_time_features", dt, Shape.Of("batch", p, c.TimeFeatureCount)),
            g.Input("past_observed_mask", dt, Shape.Of("batch", p)),
            c.NumStaticCategoricalFeatures > 0 ? g.Input("static_categorical_features", DType.Int64, Shape.Of("batch", c.NumStaticCategoricalFeatures)) : null,
            c.NumStaticRealFeatures > 0 ? g.Input("static_real_features", dt, Shape.Of("batch", c.NumStaticRealFeatures)) : null);
    }

    // ---- input pipeline (HF create_network_inputs) ----

    private (Value Inputs, Value Loc, Value Scale, Value Static) NetworkInputs(PastInputs past, Value? futureValues, Value? futureTime)
    {
        int p = c.PastLength, l = c.ContextLength;
        var context = g.Slice(past.Values, [p - l], [p], [1]);
        var observed = g.Slice(past.Observed, [p - l], [p], [1]);
        var (loc, scale) = Scaler(context, observed);                                             // (B, 1) each
        var target = futureValues is null ? past.Values : g.Concat(1, past.Values, futureValues);
        var scaled = (target - loc) / scale;                                                      // (B, P [+ H])
        var parts = new List<Value>();
        if (past.Categorical is { } cat)
            for (int i = 0; i < c.NumStaticCategoricalFeatures; i++)
            {
                var column = g.Squeeze(g.Slice(cat, [i], [i + 1], [1]), 1);                       // (B)
                parts.Add(g.Gather(P($"model.embedder.embedders.{i}.weight", c.Cardinality[i], c.EmbeddingDimension[i]), column));
            }
        if (past.Real is { } real) parts.Add(real);
        parts.Add(g.Log(g.Abs(loc) + 1.0));
        parts.Add(g.Log(scale));
        var stat = g.Concat(1, [.. parts]);                                                       // (B, S)
        var time = g.Slice(past.TimeFeatures, [p - l], [p], [1]);
        if (futureTime is not null) time = g.Concat(1, time, futureTime);
        int len = futureValues is null ? l : l + c.PredictionLength;
        int total = futureValues is null ? p : p + c.PredictionLength;
        var batch = g.Slice(g.ShapeOf(past.Values), [0], [1], [0]);
        var expanded = g.Expand(g.Unsqueeze(stat, 1), g.Concat(0, batch, g.Ints(len, c.StaticFeatureCount)));
        var lags = c.LagsSequence.Select(lag => g.Unsqueeze(g.Slice(scaled, [total - lag - len], [total - lag], [1]), 2)).ToArray();
        var x = g.Concat(2, g.Concat(2, lags), expanded, time);                                   // (B, len, feature_size)
        return (x, loc, scale, stat);
    }

    /// <summary>HF's mean / std / NOP scalers over the observed context (dim 1, keepdim).</summary>
    private (Value Loc, Value Scale) Scaler(Value data, Value observed)
    {
        var one = S(1);
        switch (c.Scaling)
        {
            case "mean":
            {
                var tsSum = g.ReduceSum(g.Abs(data * observed), [1]);                              // (B, 1)
                var count = g.ReduceSum(observed, [1]);
                var scale = tsSum / g.Max(count, one);
                // Series without observations take the batch's scale.
                var fallback = g.ReduceSum(tsSum, [0]) / g.Max(g.ReduceSum(count, [0]), one);    // (1, 1)
                scale = g.Max(g.Where(g.Greater(count, S(0)), scale, fallback), S(1e-10));
                return (g.ConstantOfShape(g.ShapeOf(scale), 0, dt), scale);
            }
            case "std":
            {
                var denominator = g.Max(g.ReduceSum(observed, [1]), one);
                var loc = g.ReduceSum(data * observed, [1]) / denominator;
                var centred = (data - loc) * observed;
                var variance = g.ReduceSum(centred * centred, [1]) / denominator;
                return (loc, g.Sqrt(variance + 1e-5));
            }
            default:
            {
                var shape = g.Concat(0, g.Slice(g.ShapeOf(data), [0], [1], [0]), g.Ints(1));
                return (g.ConstantOfShape(shape, 0, dt), g.ConstantOfShape(shape, 1, dt));
            }
        }
    }

    // ---- encoder and decoder ----

    private Value Encoder(Value x)
    {
        int l = c.ContextLength;
        var h = Linear(x, "model.encoder.value_embedding.value_projection", c.DModel, c.FeatureSize, bias: false);
        var positions = g.Slice(B("model.encoder.embed_positions.weight", c.ContextLength + c.PredictionLength, c.DModel), [0], [l], [0]);
        h = Dropout(LayerNorm(h + positions, "model.encoder.layernorm_embedding"), c.Dropout);
        for (int i = 0; i < c.EncoderLayers; i++)
            using (g.Scope($"encoder.{i}"))
            {
                h = LayerDrop(h, EncoderLayer(h, $"model.encoder.layers.{i}"), c.EncoderLayerdrop);
                // HF skips the distilling conv of a dropped layer too; static shapes need it to run always.
                if (c.IsInformer && c.Distil && i < c.EncoderLayers - 1) h = Distil(h, $"model.encoder.conv_layers.{i}");
            }
        return h;
    }

    private Value EncoderLayer(Value h, string p)
    {
        var a = SelfAttention(h, $"{p}.self_attn", c.EncoderAttentionHeads, causal: false);
        h = LayerNorm(h + Dropout(a, c.Dropout), $"{p}.self_attn_layer_norm");
        return LayerNorm(h + FeedForward(h, p, c.EncoderFfnDim), $"{p}.final_layer_norm");
    }

    private Value Decoder(Value x, Value enc)
    {
        int l = c.ContextLength;
        var h = Linear(x, "model.decoder.value_embedding.value_projection", c.DModel, c.FeatureSize, bias: false);
        var seq = g.SizeOf(x, 1);
        var table = B("model.decoder.embed_positions.weight", c.ContextLength + c.PredictionLength, c.DModel);
        // Decoder positions continue after the context: rows [context_length, context_length + seq).
        var positions = x.Shape[1].IsStatic
            ? g.Slice(table, [l], [l + x.Shape[1].Value], [0])
            : g.Slice(table, g.Ints(l), g.Unsqueeze(seq + g.Scalar(l, DType.Int64), 0), g.Ints(0));
        h = Dropout(LayerNorm(h + positions, "model.decoder.layernorm_embedding"), c.Dropout);
        for (int i = 0; i < c.DecoderLayers; i++)
            using (g.Scope($"decoder.{i}"))
            {
                var p = $"model.decoder.layers.{i}";
                var y = LayerNorm(h + Dropout(SelfAttention(h, $"{p}.self_attn", c.DecoderAttentionHeads, causal: true), c.Dropout), $"{p}.self_attn_layer_norm");
                y = LayerNorm(y + Dropout(Attention(y, enc, $"{p}.encoder_attn", c.DecoderAttentionHeads, prob: false, causal: false), c.Dropout), $"{p}.encoder_attn_layer_norm");
                y = LayerNorm(y + FeedForward(y, p, c.DecoderFfnDim), $"{p}.final_layer_norm");
                h = LayerDrop(h, y, c.DecoderLayerdrop);
            }
        return h;
    }

    private Value FeedForward(Value h, string p, int ffn)
    {
        var f = Dropout(Act(Linear(h, $"{p}.fc1", ffn, c.DModel)), c.ActivationDropout);
        return Dropout(Linear(f, $"{p}.fc2", c.DModel, ffn), c.Dropout);
    }

    private Value SelfAttention(Value h, string p, int heads, bool causal) => Attention(h, h, p, heads, c.ProbAttention, causal);

    /// <summary>BART attention: q scaled by head_dim^-0.5, softmax, dropout on the weights; ProbSparse where configured.</summary>
    private Value Attention(Value x, Value kv, string p, int heads, bool prob, bool causal)
    {
        int dh = c.DModel / heads;
        var q = Heads(Linear(x, $"{p}.q_proj", c.DModel, c.DModel) * Math.Pow(dh, -0.5), heads);
        var k = Heads(Linear(kv, $"{p}.k_proj", c.DModel, c.DModel), heads);
        var v = Heads(Linear(kv, $"{p}.v_proj", c.DModel, c.DModel), heads);
        var y = prob ? ProbSparse(q, k, v, causal) : Full(q, k, v, causal);
        y = g.Reshape(g.Transpose(y, 0, 2, 1, 3), 0, 0, c.DModel);
        return Linear(y, $"{p}.out_proj", c.DModel, c.DModel);
    }

    private Value Full(Value q, Value k, Value v, bool causal)
    {
        var scores = g.MatMul(q, g.Transpose(k, 0, 1, 3, 2));                                     // (B, H, Q, K)
        if (causal)
        {
            var zero = g.Scalar(0, DType.Int64);
            var one = g.Scalar(1, DType.Int64);
            var lq = g.SizeOf(q, 2);
            var mask = g.LessOrEqual(g.Unsqueeze(g.Range(zero, g.SizeOf(k, 2), one), 0), g.Unsqueeze(g.Range(zero, lq, one), 1));   // (Q, K)
            scores = g.Where(mask, scores, S(dt == DType.Double ? double.MinValue : float.MinValue));
        }
        return g.MatMul(Dropout(g.Softmax(scores, -1), c.AttentionDropout), v);
    }

    private Value ProbSparse(Value q, Value k, Value v, bool causal) =>
        ProbSparseAttention(g, q, k, v, causal, c.SamplingFactor, _seed ?? throw new InvalidOperationException("ProbSparse attention needs the seed input."),
            ++_salt, w => Dropout(w, c.AttentionDropout)).Output;
}
