using Optimum.Onnx;
using Optimum.Tests;

namespace Optimum.Onnx.Tests;

/// <summary>Small models written with the builder, shared by the composite tests.</summary>
internal static class Models
{
    /// <summary>
    /// A tanh MLP classifier with softmax cross-entropy, plus a tied reconstruction x̂ = h W1ᵀ that
    /// reuses W1 (fan-out into one parameter) and broadcast bias adds.
    /// </summary>
    public static Value Mlp(GraphBuilder g, Value x, Value labels, Value w1, Value b1, Value w2, Value b2)
    {
        var h = g.Tanh(g.MatMul(x, w1) + b1);                 // (B, H)
        var logits = g.MatMul(h, w2) + b2;                      // (B, C)
        var recon = g.MatMul(h, g.Transpose(w1));               // (B, D), tied to w1
        var err = recon - x;
        return g.SoftmaxCrossEntropyLoss(logits, labels, ignoreIndex: -100) + g.ReduceMean(err * err, [], keepDims: false) * 0.1;
    }

    /// <summary>
    /// One pre-LayerNorm causal self-attention block as nanoGPT writes it, over x: (B, T, C) with
    /// symbolic B and T; the causal mask is a constant cut to T at run time.
    /// </summary>
    public static Value AttentionBlock(GraphBuilder g, Value x, Value lnW, Value lnB, Value wAttn, Value bAttn, Value wProj, Value bProj, int nHead, int maxT)
    {
        long c = x.Shape[2].Value, hs = c / nHead;
        var h = g.LayerNormalization(x, lnW, lnB);
        var qkv = g.MatMul(h, wAttn) + bAttn;                           // (B, T, 3C)
        var parts = g.Split(qkv, 2, c, c, c);
        Value Heads(Value t) => g.Transpose(g.Reshape(t, 0, 0, nHead, hs), 0, 2, 1, 3);   // (B, nh, T, hs)
        var (q, k, v) = (Heads(parts[0]), Heads(parts[1]), Heads(parts[2]));
        var att = g.MatMul(q, g.Transpose(k, 0, 1, 3, 2)) * (1.0 / Math.Sqrt(hs));        // (B, nh, T, T)
        var tril = g.Constant(TensorData.FromBools(Enumerable.Range(0, maxT * maxT).Select(i => i % maxT <= i / maxT).ToArray(), maxT, maxT));
        var t = g.Slice(g.ShapeOf(x), g.Ints(1), g.Ints(2), g.Ints(0));
        var mask = g.Slice(tril, g.Ints(0, 0), g.Concat(0, t, t), g.Ints(0, 1));            // (T, T)
        att = g.Softmax(g.Where(mask, att, g.Scalar(-1e9, x.Type)), -1);
        var y = g.Reshape(g.Transpose(g.MatMul(att, v), 0, 2, 1, 3), 0, 0, c);             // (B, T, C)
        var outp = x + (g.MatMul(y, wProj) + bProj);
        return g.ReduceMean(outp * outp, [], keepDims: false);
    }
}
