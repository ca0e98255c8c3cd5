using Optimum.Core;
using Optimum.Data;

namespace Optimum.Training;

// The gradients between the backward pass and the update, wherever they are: the host's buffers, or the device's
// (DeviceState), where the same steps run as graphs.
public sealed partial class Trainer
{
    /// <summary>
    /// Forward + backward over this rank's micro-batches. Each micro-batch's loss is a mean over its
    /// counted tokens, so gradients are combined weighted by those counts (Batch.LossWeight): the
    /// result is the mean over every counted token of the step, whatever the split into micro-batches
    /// and ranks. Returns this rank's weighted gradient sum in the gradient buffer (divided by the
    /// weight when there is one rank), the weighted loss sum, the weight and the tokens.
    /// </summary>
    private (double WeightedLoss, double Weight, long Tokens) ForwardBackward(SampleIndex index, long step)
    {
        double loss = 0, weight = 0;
        long tokens = 0;
        var grads = _store.AllGrads;
        bool weighted = _o.GradAccum > 1 || _comm.Size > 1;
        for (int micro = 0; micro < _o.GradAccum; micro++)
        {
            // Global samples of micro-batch (step, micro) are N consecutive batches; this rank takes its own.
            long first = ((step * _o.GradAccum + micro) * _comm.Size + _comm.Rank) * _o.BatchSize;
            _data.FillTrain(index.Slice(first, _o.BatchSize), first, _train);
            double w = _train.LossWeight ?? _train.Tokens;
            loss += _session.TrainStep(_train, Seeds.Derive(_o.Seed, step, micro, _comm.Rank)) * w;
            weight += w;
            tokens += _train.Tokens;
            if (!weighted) continue;
            if (_device is not null)
            {
                _device.Accumulate((float)w, first: micro == 0);
                continue;
            }
            VectorMath.Scale(grads, (float)w);
            if (_accum is null) continue;
            if (micro == 0) grads.CopyTo(_accum);
            else VectorMath.Add(_accum, grads);
        }
        if (_device is not null)
        {
            // One rank: the weighted mean; ZeRO-1: the weighted sum, which the reduce-scatter adds up and divides.
            if (weighted) _device.TakeAccumulated(_comm.Size == 1 ? (weight > 0 ? (float)(1 / weight) : 0f) : 1f);
            return (loss, weight, tokens);
        }
        if (_accum is not null) _accum.CopyTo(grads);
        if (weighted && _comm.Size == 1) VectorMath.Scale(grads, weight > 0 ? (float)(1 / weight) : 0f);
        return (loss, weight, tokens);
    }

    /// <summary>
    /// ZeRO-1: sums the weighted gradients over the ranks, leaves this rank its shard divided by the global weight, and sums the
    /// loss and the tokens. Device state goes through host memory for the collectives (the whole gradient down, the shard up).
    /// Returns the mean loss, the global weight and the tokens.
    /// </summary>
    private (double Loss, double Total, long Tokens) ReduceShard(double weightedLoss, double weight, long tokens)
    {
        var (sb, se) = _store.Shard(_comm.Rank);
        _device?.DownloadGrads();
        Timed(() => { _comm.ReduceScatterSum(_store.AllGrads, _shardGrads!); return 0; });
        double total = Timed(() => _comm.AllReduceSum(weight));
        var shard = _store.AllGrads[(int)sb..(int)se];
        _shardGrads!.CopyTo(shard);
        VectorMath.Scale(shard, total > 0 ? (float)(1 / total) : 0f);
        _device?.UploadGrads(sb, se);
        double sum = Timed(() => _comm.AllReduceSum(weightedLoss));
        return (total > 0 ? sum / total : 0, total, (long)Timed(() => _comm.AllReduceSum(tokens)));
    }

    /// <summary>Multiplies this rank's shard of the gradients by <paramref name="factor"/> (unscaling, clipping).</summary>
    private void ScaleShard(float factor)
    {
        var (sb, se) = _store.Shard(_comm.Rank);
        if (_device is not null) _device.ScaleGrads(sb, se, factor);
        else VectorMath.Scale(_store.AllGrads[(int)sb..(int)se], factor);
    }

    /// <summary>The sum of the squares of this rank's shard of the gradients.</summary>
    private double ShardSumSquares()
    {
        var (sb, se) = _store.Shard(_comm.Rank);
        return _device?.SumSquares(sb, se) ?? VectorMath.SumSquares(_store.AllGrads[(int)sb..(int)se]);
    }

    /// <summary>ZeRO-1's all-gather of the updated shards (device state: this rank's shard down, every parameter up).</summary>
    private void GatherParams()
    {
        var (sb, se) = _store.Shard(_comm.Rank);
        _device?.DownloadParams(sb, se);
        Timed(() => { _comm.AllGather(_store.AllParams); return 0; });
        _device?.UploadParams(0, _store.Length);
    }

    /// <summary>Sets buffer <paramref name="index"/> (BatchNorm statistics) on the host and, with device state, on the device.</summary>
    private void SetBuffer(int index, float[] values)
    {
        values.CopyTo(_store.Param(index));
        _device?.SetParam(index, values);
    }
}
