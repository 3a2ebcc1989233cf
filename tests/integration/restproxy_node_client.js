// Every call of npm kafka-rest 0.0.5's README, in order, against the gateway; one JSON line per
// call on stdout: {"call", "error": {status, error_code, message} | null, "result"}.
// Usage: node restproxy_node_client.js URL TOPIC   (URL with the key as Basic credentials;
// NODE_PATH names the node_modules holding kafka-rest: deploy/dev/setup-node-clients)
"use strict";

const KafkaRest = require("kafka-rest");

const [url, topicName] = process.argv.slice(2);
const kafka = new KafkaRest({ url: url });
const calls = [];

function call(name, run) {
  calls.push((next) => {
    let done = false;
    const report = (err, res) => {
      if (done) return;
      done = true;
      const error = err ? { status: err.status, error_code: err.data && err.data.error_code, message: String(err.message) } : null;
      let result = res;
      if (Array.isArray(res)) result = res.map((r) => (r && r.raw !== undefined ? r.raw : r));
      else if (res && res.raw !== undefined) result = res.raw;
      process.stdout.write(JSON.stringify({ call: name, error: error, result: result === undefined ? null : result }) + "\n");
      next();
    };
    try {
      run(report);
    } catch (e) {
      report({ status: -1, message: String(e) });
    }
  });
}

// ### Metadata
call("brokers.list", (cb) => kafka.brokers.list(cb));
call("topics.list", (cb) => kafka.topics.list(cb));
call("topics.get", (cb) => kafka.topics.get(topicName, cb));
call("topic.partitions.list", (cb) => kafka.topics.topic(topicName).partitions.list(cb));
call("topic.partition.get", (cb) => kafka.topic(topicName).partitions.get(0, cb));
call("topicPartition.get", (cb) => kafka.topicPartition(topicName, 1).get(cb));

// ### Producing (binary data)
const topic = kafka.topic(topicName);
call("produce single", (cb) => topic.produce("msg1", cb));
call("produce key value partition", (cb) => topic.produce({ key: "key1", value: "msg1", partition: 0 }, cb));
call("produce partition value", (cb) => topic.produce({ partition: 0, value: "msg1" }, cb));
call("produce several", (cb) => topic.produce("msg1", "msg2", "msg3", cb));
call("produce array", (cb) => topic.produce(["msg1", "msg2", "msg3"], cb));
call("produce mixed", (cb) => topic.produce("msg1", { partition: 0, value: "msg2" }, cb));
call("partition produce", (cb) => kafka.topic(topicName).partition(1).produce("p1", { key: "pk", value: "p2" }, cb));
call("topicPartition produce", (cb) => kafka.topicPartition(topicName, 2).produce(Buffer.from([0x68, 0x69]), cb));

// ### Producing (Avro data: needs a schema registry)
const userIdSchema = new KafkaRest.AvroSchema("int");
const userInfoSchema = new KafkaRest.AvroSchema({
  name: "UserInfo",
  type: "record",
  fields: [
    { name: "id", type: "int" },
    { name: "name", type: "string" },
  ],
});
call("produce avro value", (cb) => topic.produce(userInfoSchema, { avro: "record" }, { avro: "another record" }, cb));
call("produce avro key value", (cb) => topic.produce(userIdSchema, userInfoSchema, { key: 1, value: { id: 1, name: "Bob" } }, cb));

// ### Consumers
call("consumer join", (cb) =>
  kafka.consumer("my-consumer-group").join({ format: "avro", "auto.commit.enable": "true" }, cb)
);

let i = 0;
const next = () => {
  if (i < calls.length) calls[i++](next);
};
next();
