namespace Optimum.Models;

/// <summary>Informer's pieces: ProbSparse self-attention and the distilling layer.</summary>
public sealed partial class TimeSeriesModel
{
    /// <summary>
    /// Informer's ProbSparse self-attention as HF runs it, over q (already scaled), k, v of shape (B, H, L, d):
    /// sample u_part = min(c·L_Q·⌈ln(1+L_K)⌉, L_K) keys (with replacement, from the seed and salt), score each
    /// query by M = max(q·k_s) − Σ q·k_s / L_K, attend with only the top u = min(c·⌈ln(1+L_Q)⌉, L_Q) queries,
    /// and give the others the mean of the values (encoder) or their cumulative sum (decoder, causal). Static
    /// lengths give a static u; symbolic ones compute u in the graph. Returns the output (B, H, L_Q, d), the
    /// sampled key indices (u_part) and the selected queries (B, H, u).
    /// </summary>
    public static (Value Output, Value SampledKeys, Value Selected) ProbSparseAttention(GraphBuilder g, Value q, Value k, Value v, bool causal, long factor,
        Value seed, long salt, Func<Value, Value>? dropout = null)
    {
        var dt = q.Type;
        long dh = q.Shape[3].Value;
        Value lq64 = g.SizeOf(q, 2), lk64 = g.SizeOf(k, 2), uPart, u;
        Dim uDim = Dim.Unknown;
        if (q.Shape[2].IsStatic && k.Shape[2].IsStatic)
        {
            long lq = q.Shape[2].Value, lk = k.Shape[2].Value;
            long up = Math.Min(factor * lq * (long)Math.Ceiling(Math.Log(1 + (double)lk)), lk), uu = Math.Min(factor * (long)Math.Ceiling(Math.Log(1 + (double)lq)), lq);
            (uPart, u, uDim) = (g.Scalar(up, DType.Int64), g.Ints(uu), Dim.Of(uu));
        }
        else
        {
            Value LogCeil(Value n) => g.Cast(g.Ceil(g.Log(g.Cast(n, DType.Double) + 1.0)), DType.Int64);
            var f = g.Scalar(factor, DType.Int64);
            uPart = g.Min(f * lq64 * LogCeil(lk64), lk64);
            u = g.Unsqueeze(g.Min(f * LogCeil(lq64), lq64), 0);
        }
        var sample = g.Mod(g.Hash(seed, salt, g.Range(g.Scalar(0, DType.Int64), uPart, g.Scalar(1, DType.Int64))), lk64);   // (u_part)
        var qk = g.MatMul(q, g.Transpose(g.Gather(k, sample, 2), 0, 1, 3, 2));                  // (B, H, Q, u_part)
        var sparsity = g.ReduceMax(qk, [-1], keepDims: false) - g.ReduceSum(qk, [-1], keepDims: false) / g.Cast(lk64, dt);
        var top = g.TopK(sparsity, u, axis: -1, largest: true, sorted: false, kDim: uDim)[1];     // (B, H, u)
        var rows = g.Unsqueeze(top, 3);                                                           // (B, H, u, 1)
        var index = g.Expand(rows, g.Concat(0, g.ShapeOf(top), g.Ints(dh)));                     // (B, H, u, dh)
        var scores = g.MatMul(g.GatherElements(q, index, 2), g.Transpose(k, 0, 1, 3, 2));         // (B, H, u, K)
        if (causal)
        {
            var keys = g.Range(g.Scalar(0, DType.Int64), lk64, g.Scalar(1, DType.Int64));          // (K)
            scores = g.Where(g.LessOrEqual(keys, rows), scores, g.Scalar(dt == DType.Double ? double.MinValue : float.MinValue, dt));
        }
        var weights = g.Softmax(scores, -1);
        var selected = g.MatMul(dropout is null ? weights : dropout(weights), v);                  // (B, H, u, dh)
        var context = causal ? g.CumSum(v, 2) : g.Expand(g.ReduceMean(v, [2]), g.ShapeOf(q));
        return (g.ScatterElements(context, index, selected, axis: 2), sample, top);
    }

    /// <summary>Informer's distilling layer: circular Conv1d(k3), BatchNorm1d, ELU, MaxPool1d(k3, s2, p1) over time.</summary>
    private Value Distil(Value h, string p)
    {
        var x = g.Transpose(h, 0, 2, 1);                                                          // (B, D, L)
        long l = x.Shape[2].Value;
        x = g.Concat(2, g.Slice(x, [l - 1], [l], [2]), x, g.Slice(x, [0], [1], [2]));            // circular padding 1
        x = g.Conv(x, P($"{p}.downConv.weight", c.DModel, c.DModel, 3), P($"{p}.downConv.bias", c.DModel));
        var mean = B($"{p}.norm.running_mean", c.DModel);
        var variance = B($"{p}.norm.running_var", c.DModel);
        // In training, ONNX Runtime writes the node's running-statistic outputs into the buffers of its mean and
        // variance inputs, and the batch statistics ignore them: feed it throwaway constants, never the buffers.
        var y = training
            ? g.BatchNormalization(x, P($"{p}.norm.weight", c.DModel), P($"{p}.norm.bias", c.DModel),
                g.Constant(TensorData.FromNumbers(dt, new double[c.DModel], c.DModel)), g.Constant(TensorData.FromNumbers(dt, Enumerable.Repeat(1.0, c.DModel).ToArray(), c.DModel)), true)[0]
            : g.BatchNormalization(x, P($"{p}.norm.weight", c.DModel), P($"{p}.norm.bias", c.DModel), mean, variance, false)[0];
        if (_debugBatchNormInput && !g.Outputs.Any(o => o.Name == DebugBatchNormInput)) g.Output(x, DebugBatchNormInput);
        if (training)
        {
            // torch's running statistics: momentum 0.1, the unbiased batch variance.
            var batchMean = g.ReduceMean(x, [0, 2]);                                                // (1, D, 1)
            var centred = x - batchMean;
            var n = g.Cast(g.SizeOf(x, 0), dt) * (double)l;
            var unbiased = g.ReduceSum(centred * centred, [0, 2], keepDims: false) / (n - 1.0);
            _updates.Add(new(mean.Name, mean * 0.9 + g.Reshape(batchMean, -1) * 0.1));
            _updates.Add(new(variance.Name, variance * 0.9 + unbiased * 0.1));
        }
        y = g.MaxPool(g.Elu(y), [3], strides: [2], pads: [1, 1]);
        return g.Transpose(y, 0, 2, 1);
    }
}
