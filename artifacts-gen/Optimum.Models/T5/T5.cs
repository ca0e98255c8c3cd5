namespace Optimum.Models;

/// <summary>
/// T5 in the graph-builder DSL with Hugging Face's parameter names. What T5 does differently from
/// GPT-2, all of it: RMS layer norm (no mean, no bias); relative position bias (log-spaced buckets,
/// bidirectional in the encoder, causal in the decoder) computed once per stack by its first layer and
/// shared by the others; no 1/sqrt(d) scaling of scores; cross-attention; linear layers without bias
/// stored (out, in); labels shifted right into decoder inputs with decoder_start_token_id, -100 → pad.
/// Graphs: training/eval (loss, logits, encoder output), the encoder (also the decoder layers'
/// cross-attention keys/values, computed once per input) and the decoder with a self-attention cache.
/// </summary>
public sealed class T5 : GraphModel<T5Config>
{
    private Value? _seed;
    private int _salt;

    private T5(GraphBuilder g, T5Config c, DType dtype, bool training) : base(g, c, dtype, training) => c.Validate();

    /// <summary>input_ids, attention_mask (batch, src), labels (batch, tgt) → loss, logits, encoder_last_hidden_state.</summary>
    public static ModelOutputs DefineLm(GraphBuilder g, bool training, T5Config c, DType dtype = DType.Float)
    {
        var ids = g.Input("input_ids", DType.Int64, Shape.Of("batch", "src"));
        var mask = g.Input("attention_mask", DType.Int64, Shape.Of("batch", "src"));
        var labels = g.Input("labels", DType.Int64, Shape.Of("batch", "tgt"));
        var m = new T5(g, c, dtype, training);
        if (training && c.DropoutRate > 0) m._seed = g.Input(GraphInputs.DropoutSeed, DType.Int64, Shape.Scalar);
        var (enc, crossMask) = m.Encoder(ids, mask);
        var decIds = m.ShiftRight(labels);
        var (logits, _) = m.Decoder(decIds, crossMask, enc, null, null);
        var loss = m.LmLoss(logits, labels, c.VocabSize);
        return new ModelOutputs(loss, [new("logits", logits), new("encoder_last_hidden_state", enc)]);
    }

    /// <summary>The encoder: input_ids, attention_mask → encoder_last_hidden_state and cross_key_values.{i}.key/value (batch, heads, src, d_kv).</summary>
    public static void DefineEncoder(GraphBuilder g, T5Config c, DType dtype = DType.Float)
    {
        var m = new T5(g, c, dtype, false);
        var (enc, _) = m.Encoder(g.Input("input_ids", DType.Int64, Shape.Of("batch", "src")), g.Input("attention_mask", DType.Int64, Shape.Of("batch", "src")));
        g.Output(enc, "encoder_last_hidden_state");
        for (int i = 0; i < c.NumDecoderLayers; i++)
        {
            var p = $"decoder.block.{i}.layer.1.EncDecAttention";
            g.Output(m.Heads(m.Linear(enc, $"{p}.k", c.Inner, c.DModel)), $"cross_key_values.{i}.key");
            g.Output(m.Heads(m.Linear(enc, $"{p}.v", c.Inner, c.DModel)), $"cross_key_values.{i}.value");
        }
    }

    /// <summary>
    /// One decoder step: input_ids (batch, seq) after past positions, decoder_attention_mask (batch, past + seq),
    /// encoder_attention_mask (batch, src), past_key_values.{i}.key/value (batch, heads, past, d_kv),
    /// cross_key_values.{i}.key/value → logits, present.{i}.key/value. The decoder mask hides the left padding of
    /// rows whose targets are shorter than the batch's cache (continuous batching); the relative position bias
    /// depends only on key − query, so a row's real positions keep their bias however much padding precedes them.
    /// </summary>
    public static void DefineDecoder(GraphBuilder g, T5Config c, DType dtype = DType.Float)
    {
        var m = new T5(g, c, dtype, false);
        var ids = g.Input("input_ids", DType.Int64, Shape.Of("batch", "seq"));
        var selfMask = g.Input("decoder_attention_mask", DType.Int64, Shape.Of("batch", "total"));
        var encMask = g.Input("encoder_attention_mask", DType.Int64, Shape.Of("batch", "src"));
        var past = Enumerable.Range(0, c.NumDecoderLayers).Select(i => (
            g.Input($"past_key_values.{i}.key", dtype, Shape.Of("batch", c.NumHeads, "past", c.DKv)),
            g.Input($"past_key_values.{i}.value", dtype, Shape.Of("batch", c.NumHeads, "past", c.DKv)))).ToArray();
        var cross = Enumerable.Range(0, c.NumDecoderLayers).Select(i => (
            g.Input($"cross_key_values.{i}.key", dtype, Shape.Of("batch", c.NumHeads, "src", c.DKv)),
            g.Input($"cross_key_values.{i}.value", dtype, Shape.Of("batch", c.NumHeads, "src", c.DKv)))).ToArray();
        var (logits, present) = m.Decoder(ids, g.Unsqueeze(g.Cast(encMask, DType.Bool), 1, 2), null, past, cross,
            g.Unsqueeze(g.Cast(selfMask, DType.Bool), 1, 2));                                                                // (B, 1, 1, P+T)
        g.Output(logits, "logits");
        for (int i = 0; i < c.NumDecoderLayers; i++)
        {
            g.Output(present[i].Key, $"present.{i}.key");
            g.Output(present[i].Value, $"present.{i}.value");
        }
    }

    private Value Dropout(Value x) => _seed is { } s && c.DropoutRate > 0 ? g.Dropout(x, c.DropoutRate, true, s, ++_salt) : x;

    private (Value Encoded, Value CrossMask) Encoder(Value ids, Value mask)
    {
        var h = Dropout(g.Gather(P("shared.weight", c.VocabSize, c.DModel), ids));               // (B, S, D)
        var keyMask = g.Unsqueeze(g.Cast(mask, DType.Bool), 1, 2);                              // (B, 1, 1, S)
        var len = g.SizeOf(ids, 1);
        var bias = RelativeBias("encoder.block.0.layer.0.SelfAttention", g.Scalar(0, DType.Int64), len, len, bidirectional: true);
        for (int i = 0; i < c.NumLayers; i++)
            using (g.Scope($"encoder.{i}"))
            {
                var p = $"encoder.block.{i}.layer";
                var n = RmsNorm(h, $"{p}.0.layer_norm");
                h = h + Dropout(Attention(n, $"{p}.0.SelfAttention", Heads(Linear(n, $"{p}.0.SelfAttention.k", c.Inner, c.DModel)),
                    Heads(Linear(n, $"{p}.0.SelfAttention.v", c.Inner, c.DModel)), bias, keyMask));
                h = h + Dropout(FeedForward(RmsNorm(h, $"{p}.1.layer_norm"), $"{p}.1.DenseReluDense"));
            }
        return (Dropout(RmsNorm(h, "encoder.final_layer_norm")), keyMask);
    }

    private (Value Logits, (Value Key, Value Value)[] Present) Decoder(Value ids, Value crossMask, Value? encoded,
        (Value Key, Value Value)[]? past, (Value Key, Value Value)[]? cross, Value? selfMask = null)
    {
        var h = Dropout(g.Gather(P("shared.weight", c.VocabSize, c.DModel), ids));               // (B, T, D)
        var zero = g.Scalar(0, DType.Int64);
        var seq = g.SizeOf(ids, 1);
        var pastLen = past is null ? zero : g.SizeOf(past[0].Key, 2);
        var total = past is null ? seq : g.Add(pastLen, seq);
        var bias = RelativeBias("decoder.block.0.layer.0.SelfAttention", pastLen, total, total, bidirectional: false);   // (1, H, T, P+T)
        var causal = g.LessOrEqual(g.Unsqueeze(g.Range(zero, total, g.Scalar(1, DType.Int64)), 0),
            g.Unsqueeze(g.Range(pastLen, total, g.Scalar(1, DType.Int64)), 1));                                               // (T, P+T)
        if (selfMask is not null) causal = g.And(causal, selfMask);                                                         // (B, 1, T, P+T)
        var present = new (Value, Value)[c.NumDecoderLayers];
        for (int i = 0; i < c.NumDecoderLayers; i++)
            using (g.Scope($"decoder.{i}"))
            {
                var p = $"decoder.block.{i}.layer";
                var n = RmsNorm(h, $"{p}.0.layer_norm");
                Value k = Heads(Linear(n, $"{p}.0.SelfAttention.k", c.Inner, c.DModel)), v = Heads(Linear(n, $"{p}.0.SelfAttention.v", c.Inner, c.DModel));
                if (past is not null) (k, v) = (g.Concat(2, past[i].Key, k), g.Concat(2, past[i].Value, v));
                present[i] = (k, v);
                h = h + Dropout(Attention(n, $"{p}.0.SelfAttention", k, v, bias, causal));
                n = RmsNorm(h, $"{p}.1.layer_norm");
                var (ck, cv) = cross is not null ? cross[i]
                    : (Heads(Linear(encoded!, $"{p}.1.EncDecAttention.k", c.Inner, c.DModel)), Heads(Linear(encoded!, $"{p}.1.EncDecAttention.v", c.Inner, c.DModel)));
                h = h + Dropout(Attention(n, $"{p}.1.EncDecAttention", ck, cv, null, crossMask));
                h = h + Dropout(FeedForward(RmsNorm(h, $"{p}.2.layer_norm"), $"{p}.2.DenseReluDense"));
            }
        h = Dropout(RmsNorm(h, "decoder.final_layer_norm"));
        if (c.ScaleDecoderOutputs) h = h * Math.Pow(c.DModel, -0.5);
        var head = c.TieWordEmbeddings ? P("shared.weight", c.VocabSize, c.DModel) : P("lm_head.weight", c.VocabSize, c.DModel);
        return (g.MatMul(h, g.Transpose(head)), present);                                          // (B, T, vocab)
    }

    /// <summary>Multi-head attention without score scaling; bias (1, H, Q, K) and a boolean mask that broadcasts to (B, H, Q, K).</summary>
    private Value Attention(Value x, string p, Value k, Value v, Value? bias, Value mask)
    {
        var q = Heads(Linear(x, $"{p}.q", c.Inner, c.DModel));                                    // (B, H, T, d_kv)
        var scores = g.MatMul(q, g.Transpose(k, 0, 1, 3, 2));                                     // (B, H, T, K)
        if (bias is not null) scores = scores + bias;
        scores = g.Where(mask, scores, g.Scalar(dt == DType.Double ? double.MinValue : float.MinValue, dt));
        var att = Dropout(g.Softmax(scores, -1));
        var y = g.Reshape(g.Transpose(g.MatMul(att, v), 0, 2, 1, 3), 0, 0, c.Inner);             // (B, T, inner)
        return Linear(y, $"{p}.o", c.DModel, c.Inner);
    }

    private Value FeedForward(Value x, string p)
    {
        Value h = c.Gated
            ? Act(Linear(x, $"{p}.wi_0", c.DFf, c.DModel)) * Linear(x, $"{p}.wi_1", c.DFf, c.DModel)
            : Act(Linear(x, $"{p}.wi", c.DFf, c.DModel));
        return Linear(Dropout(h), $"{p}.wo", c.DModel, c.DFf);
    }

    private Value Act(Value x) => c.FeedForwardProj switch
    {
        "gated-gelu" => g.Gelu(x, tanh: true),    // HF maps gated-gelu to gelu_new
        "gelu" => g.Gelu(x, tanh: false),
        "gated-silu" => x * g.Sigmoid(x),
        _ => g.Relu(x),
    };

    /// <summary>nn.Linear without bias: x @ Wᵀ with W stored (out, in).</summary>
    private Value Linear(Value x, string p, long nOut, long nIn) => g.MatMul(x, g.Transpose(P($"{p}.weight", nOut, nIn)));

    private Value Heads(Value t) => g.Transpose(g.Reshape(t, 0, 0, c.NumHeads, c.DKv), 0, 2, 1, 3);    // (B, H, T, d_kv)

    /// <summary>T5LayerNorm: x / sqrt(mean(x²) + eps) · w (no mean subtraction, no bias).</summary>
    private Value RmsNorm(Value x, string p) =>
        x * g.Reciprocal(g.Sqrt(g.ReduceMean(x * x, [-1]) + c.LayerNormEpsilon)) * P($"{p}.weight", c.DModel);

    /// <summary>
    /// The relative position bias of queries at positions [qStart, qEnd) against keys [0, kLen):
    /// HF's _relative_position_bucket (half the buckets per direction when bidirectional; exact
    /// buckets below num/2, log-spaced up to max_distance) looked up in the first layer's table → (1, H, Q, K).
    /// </summary>
    private Value RelativeBias(string p, Value qStart, Value qEnd, Value kLen, bool bidirectional)
    {
        var one = g.Scalar(1, DType.Int64);
        var ctx = g.Unsqueeze(g.Range(qStart, qEnd, one), 1);                                    // (Q, 1)
        var mem = g.Unsqueeze(g.Range(g.Scalar(0, DType.Int64), kLen, one), 0);                  // (1, K)
        var rel = mem - ctx;                                                                      // (Q, K)
        long buckets = c.RelativeAttentionNumBuckets;
        Value baseBucket, n;
        if (bidirectional)
        {
            buckets /= 2;
            baseBucket = g.Cast(g.Greater(rel, g.Scalar(0, DType.Int64)), DType.Int64) * g.Scalar(buckets, DType.Int64);
            n = g.Abs(rel);
        }
        else
        {
            baseBucket = g.Scalar(0, DType.Int64);
            n = -g.Min(rel, g.Scalar(0, DType.Int64));
        }
        long maxExact = buckets / 2;
        var isSmall = g.Less(n, g.Scalar(maxExact, DType.Int64));
        var nf = g.Cast(g.Max(n, one), DType.Float);
        var scaled = g.Log(nf / (float)maxExact) / (float)Math.Log((double)c.RelativeAttentionMaxDistance / maxExact) * (float)(buckets - maxExact);
        var large = g.Min(g.Cast(scaled, DType.Int64) + g.Scalar(maxExact, DType.Int64), g.Scalar(buckets - 1, DType.Int64));
        var bucket = baseBucket + g.Where(isSmall, n, large);                                     // (Q, K)
        var table = P($"{p}.relative_attention_bias.weight", c.RelativeAttentionNumBuckets, c.NumHeads);
        return g.Unsqueeze(g.Transpose(g.Gather(table, bucket), 2, 0, 1), 0);                    // (1, H, Q, K)
    }

    /// <summary>HF's _shift_right: [decoder_start, labels[:, :-1]] with -100 replaced by pad.</summary>
    private Value ShiftRight(Value labels)
    {
        var batch = g.Slice(g.ShapeOf(labels), g.Ints(0), g.Ints(1), g.Ints(0));
        var start = g.ConstantOfShape(g.Concat(0, batch, g.Ints(1)), c.DecoderStartTokenId, DType.Int64);
        var shifted = g.Concat(1, start, g.Slice(labels, g.Ints(0), g.Ints(-1), g.Ints(1)));
        return g.Where(g.Equal(shifted, g.Scalar(-100, DType.Int64)), g.Scalar(c.PadTokenId, DType.Int64), shifted);
    }
}
