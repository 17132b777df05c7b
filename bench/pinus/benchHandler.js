// The echo handler (route "connector.benchHandler.echo"): the answer is the request's body.
class Handler {
  constructor(app) {
    this.app = app;
  }

  async echo(msg, session) {
    return msg;
  }
}

exports.default = function (app) {
  return new Handler(app);
};
