namespace Optimum.Models;

/// <summary>
/// GPT-2 in the graph-builder DSL, after nanoGPT's model.py. Parameter names are the Hugging Face
/// checkpoint keys and weights keep HF's Conv1D layout (in, out), so loading a checkpoint is a loop.
/// One forward serves three graphs: training (loss + gradients), eval (loss + logits) and the
/// KV-cache decoder (logits + present keys/values), which handles a prompt and each new token alike.
/// </summary>
public sealed class Gpt2 : GraphModel<Gpt2Config>
{
    private Value? _dropoutSeed;

    private Gpt2(GraphBuilder g, Gpt2Config c, DType dtype, bool training) : base(g, c, dtype, training) => c.Validate();

    /// <summary>
    /// The language-model graph: input_ids, attention_mask, labels (batch, seq) → loss (HF's shifted
    /// cross-entropy, -100 ignored) and logits. Positions are 0..seq-1, as HF uses when none are given.
    /// </summary>
    public static ModelOutputs DefineLm(GraphBuilder g, bool training, Gpt2Config c, DType dtype = DType.Float)
    {
        var ids = g.Input("input_ids", DType.Int64, Shape.Of("batch", "seq"));
        var mask = g.Input("attention_mask", DType.Int64, Shape.Of("batch", "seq"));
        var labels = g.Input("labels", DType.Int64, Shape.Of("batch", "seq"));
        var m = new Gpt2(g, c, dtype, training);
        if (training && Math.Max(c.EmbdPdrop, Math.Max(c.AttnPdrop, c.ResidPdrop)) > 0)
            m._dropoutSeed = g.Input(GraphInputs.DropoutSeed, DType.Int64, Shape.Scalar);
        var seq = g.SizeOf(ids, 1);
        var positions = g.Unsqueeze(g.Range(g.Scalar(0, DType.Int64), seq, g.Scalar(1, DType.Int64)), 0);   // (1, T)
        var (logits, _) = m.Forward(ids, positions, mask, past: null);
        return new ModelOutputs(m.CausalLmLoss(logits, labels), [new("logits", logits)]);
    }

    /// <summary>
    /// The inference decoder: input_ids, position_ids (batch, seq), attention_mask (batch, past + seq)
    /// and past_key_values.{i}.key/value (batch, n_head, past, head size) → logits (batch, seq, vocab)
    /// and present.{i}.key/value (batch, n_head, past + seq, head size). A prompt runs with past = 0.
    /// </summary>
    public static void DefineDecoder(GraphBuilder g, Gpt2Config c, DType dtype = DType.Float)
    {
        var ids = g.Input("input_ids", DType.Int64, Shape.Of("batch", "seq"));
        var mask = g.Input("attention_mask", DType.Int64, Shape.Of("batch", "total"));
        var positions = g.Input("position_ids", DType.Int64, Shape.Of("batch", "seq"));
        var past = Enumerable.Range(0, c.NLayer).Select(i => (
            g.Input($"past_key_values.{i}.key", dtype, Shape.Of("batch", c.NHead, "past", c.HeadSize)),
            g.Input($"past_key_values.{i}.value", dtype, Shape.Of("batch", c.NHead, "past", c.HeadSize)))).ToArray();
        var m = new Gpt2(g, c, dtype, training: false);
        var (logits, present) = m.Forward(ids, positions, mask, past);
        g.Output(logits, "logits");
        for (int i = 0; i < c.NLayer; i++)
        {
            g.Output(present[i].Key, $"present.{i}.key");
            g.Output(present[i].Value, $"present.{i}.value");
        }
    }

    private (Value Logits, (Value Key, Value Value)[] Present) Forward(Value ids, Value positions, Value mask, (Value Key, Value Value)[]? past)
    {
        var wte = P("transformer.wte.weight", c.VocabSize, c.NEmbd);
        var x = g.Gather(wte, ids) + g.Gather(P("transformer.wpe.weight", c.NPositions, c.NEmbd), positions);   // (B, T, C)
        x = Dropout(x, c.EmbdPdrop, salt: 1);
        var allowed = AttentionMask(ids, mask, past?[0].Key);                                                     // (B, 1, T, S)
        var present = new (Value, Value)[c.NLayer];
        for (int i = 0; i < c.NLayer; i++)
            using (g.Scope($"h.{i}"))
                (x, present[i]) = Block(x, i, allowed, past?[i]);
        x = LayerNorm(x, "transformer.ln_f");
        var head = c.TieWordEmbeddings ? wte : P("lm_head.weight", c.VocabSize, c.NEmbd);
        return (g.MatMul(x, g.Transpose(head)), present);                                                          // (B, T, vocab)
    }

    private (Value, (Value, Value)) Block(Value x, int layer, Value allowed, (Value Key, Value Value)? past)
    {
        var p = $"transformer.h.{layer}";
        var (a, present) = Attention(LayerNorm(x, $"{p}.ln_1"), $"{p}.attn", layer, allowed, past);
        x = x + a;
        x = x + Mlp(LayerNorm(x, $"{p}.ln_2"), $"{p}.mlp", layer);
        return (x, present);
    }

    private (Value, (Value, Value)) Attention(Value x, string p, int layer, Value allowed, (Value Key, Value Value)? past)
    {
        long C = c.NEmbd, hs = c.HeadSize;
        var qkv = Conv1D(x, $"{p}.c_attn", C, 3 * C);                                     // (B, T, 3C)
        var parts = g.Split(qkv, 2, C, C, C);
        Value Heads(Value t) => g.Transpose(g.Reshape(t, 0, 0, c.NHead, hs), 0, 2, 1, 3);   // (B, nh, T, hs)
        var (q, k, v) = (Heads(parts[0]), Heads(parts[1]), Heads(parts[2]));
        if (past is { } kv)
        {
            k = g.Concat(2, kv.Key, k);                                                    // (B, nh, S, hs)
            v = g.Concat(2, kv.Value, v);
        }
        var att = g.MatMul(q, g.Transpose(k, 0, 1, 3, 2));                                 // (B, nh, T, S)
        if (c.ScaleAttnWeights) att = att / Math.Sqrt(hs);
        if (c.ScaleAttnByInverseLayerIdx) att = att / (layer + 1.0);
        att = g.Where(allowed, att, g.Scalar(dt == DType.Double ? double.MinValue : float.MinValue, dt));
        att = Dropout(g.Softmax(att, -1), c.AttnPdrop, salt: 100 + layer);
        var y = g.Reshape(g.Transpose(g.MatMul(att, v), 0, 2, 1, 3), 0, 0, C);              // (B, T, C)
        y = Dropout(Conv1D(y, $"{p}.c_proj", C, C), c.ResidPdrop, salt: 200 + layer);
        return (y, (k, v));
    }

    private Value Mlp(Value x, string p, int layer)
    {
        var h = Activation(Conv1D(x, $"{p}.c_fc", c.NEmbd, c.Inner));                       // (B, T, inner)
        return Dropout(Conv1D(h, $"{p}.c_proj", c.Inner, c.NEmbd), c.ResidPdrop, salt: 300 + layer);
    }

    private Value Dropout(Value x, double p, long salt) =>
        _dropoutSeed is { } seed && p > 0 ? g.Dropout(x, p, training: true, seed, salt) : x;

    /// <summary>HF's Conv1D: x @ W + b with W stored (in, out).</summary>
    private Value Conv1D(Value x, string p, long nIn, long nOut) => g.MatMul(x, P($"{p}.weight", nIn, nOut)) + P($"{p}.bias", nOut);

    private Value LayerNorm(Value x, string p) =>
        g.LayerNormalization(x, P($"{p}.weight", c.NEmbd), P($"{p}.bias", c.NEmbd), -1, (float)c.LayerNormEpsilon);

    private Value Activation(Value x) => c.ActivationFunction switch
    {
        "gelu_new" or "gelu_pytorch_tanh" => g.Gelu(x, tanh: true),
        "gelu" => g.Gelu(x, tanh: false),
        "relu" => g.Relu(x),
        "silu" or "swish" => x * g.Sigmoid(x),
        "quick_gelu" => x * g.Sigmoid(x * 1.702),
        var a => throw new InvalidDataException($"activation_function '{a}' is not supported."),
    };

    /// <summary>
    /// (B, 1, T, S) booleans: query t (absolute position past + t) may attend key s when s &lt;= past + t
    /// and attention_mask[b, s] is 1.
    /// </summary>
    private Value AttentionMask(Value ids, Value mask, Value? pastKey)
    {
        var zero = g.Scalar(0, DType.Int64);
        var one = g.Scalar(1, DType.Int64);
        var seq = g.SizeOf(ids, 1);
        var pastLen = pastKey is null ? zero : g.SizeOf(pastKey, 2);
        var total = pastKey is null ? seq : g.Add(pastLen, seq);
        var queries = g.Unsqueeze(g.Range(pastLen, total, one), 1);                     // (T, 1)
        var keys = g.Unsqueeze(g.Range(zero, total, one), 0);                           // (1, S)
        var causal = g.LessOrEqual(keys, queries);                                      // (T, S)
        var padding = g.Unsqueeze(g.Cast(mask, DType.Bool), 1, 2);                      // (B, 1, 1, S)
        return g.And(causal, padding);
    }

    /// <summary>HF's causal-LM loss: labels shifted left by one, the last position padded with -100, mean over the rest.</summary>
    private Value CausalLmLoss(Value logits, Value labels)
    {
        var shifted = g.Slice(labels, g.Ints(1), g.Ints(long.MaxValue), g.Ints(1));     // (B, T-1)
        var batch = g.Slice(g.ShapeOf(labels), g.Ints(0), g.Ints(1), g.Ints(0));
        var pad = g.ConstantOfShape(g.Concat(0, batch, g.Ints(1)), -100, DType.Int64);  // (B, 1)
        var target = g.Concat(1, shifted, pad);                                         // (B, T)
        return LmLoss(logits, target, c.VocabSize);
    }
}
